"""Bring your own network and data: model families and data sources from installed packages
(here `examples/plugin`, installed by `make setup`), `caviar plugins`, and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import mlflow
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import caviar
from caviar.models.data import build_dataset
from caviar.models.sources import DigitsSource
from caviar.sweeps.record.champion_export import raw_frame, save_champion
from caviar.sweeps.views.cli import app
from tests.conftest import CAVIAR, run_local_sweep, spec_dict, write_spec

runner = CliRunner()
PLUGIN = {
    "data": {"source": "spirals", "samples": 300, "arms": 3},
    "model": {"family": "resmlp", "width": 16, "blocks": 1},
    "train": {"epochs": 3, "batch_size": 32},
    "space": {
        "lr": {"scale": "log", "low": 0.01, "high": 0.5},
        "width": {"scale": "int", "low": 8, "high": 32, "log": True},
        "blocks": {"scale": "int", "low": 0, "high": 2},
    },
    "stages": [{"name": "search", "trials": 3}],
}


def test_plugins_lists_built_in_and_installed_families_and_sources():
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in ("mlp", "cnn1d", "resmlp", "mnist1d", "csv", "spirals"):
        assert name in result.output
    assert "caviar-example-plugin" in result.output and "caviar (built in)" in result.output


@pytest.mark.parametrize(
    ("section", "expected", "registered"),
    [
        (
            {"model": {"family": "resnet"}},
            "model.family: 'resnet' is not a registered model family",
            ["'mlp'", "'cnn1d'", "'resmlp'"],
        ),
        (
            {"data": {"source": "imagenet"}},
            "data.source: 'imagenet' is not a registered data source",
            ["'mnist1d'", "'csv'", "'spirals'"],
        ),
    ],
)
def test_an_unregistered_family_or_source_is_refused_with_the_registered_ones(
    tmp_path, section, expected, registered
):
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path, spec_dict(**section)))])
    assert result.exit_code == 2 and expected in result.output
    assert all(name in result.output for name in registered)


def test_space_may_search_only_the_familys_own_fields(tmp_path):
    spec = spec_dict(model={"family": "cnn1d"})  # TINY_SPEC searches lr and momentum: fine
    spec["space"]["hidden_units"] = {"scale": "int", "low": 8, "high": 32}
    result = runner.invoke(app, ["validate", str(write_spec(tmp_path, spec))])
    assert result.exit_code == 2
    assert "space.hidden_units: unknown hyperparameter for the cnn1d family" in result.output


def test_a_plugin_family_and_source_sweep_prune_resume_and_publish(tmp_path):
    changes = {**PLUGIN, "stages": [{"name": "search", "trials": 4, "sampler": "random",
               "pruner": {"kind": "median", "startup_trials": 1, "warmup_epochs": 0}}]}  # fmt: skip
    sweep = run_local_sweep(tmp_path, changes)
    trials = sweep.study("search").trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    again = run_local_sweep(tmp_path, changes)  # resumes: nothing new to run
    assert len(again.study("search").trials) == 4
    mlflow.set_tracking_uri(sweep.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/tiny@champion", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    data = build_dataset(sweep.spec.data)
    labels = model.predict(raw_frame(data, data.x_test), params={"output": "label"})["label"]
    assert set(labels) <= {"arm-0", "arm-1", "arm-2"}


class Gated(torch.nn.Module):
    """Data-dependent control flow, which torch.export cannot capture."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_network_torch_export_cannot_capture_is_saved_pickled_and_still_loads(tmp_path):
    data = build_dataset(DigitsSource(source="digits"))
    network = torch.nn.Sequential(Gated(), torch.nn.Softmax(dim=1))
    saved = save_champion(network, data, tmp_path)
    assert saved.fallback and (tmp_path / "network.pt").exists()
    model = mlflow.pyfunc.load_model(str(saved.model_dir))
    probabilities = model.predict(raw_frame(data, data.x_test[:4]))
    assert probabilities.shape == (4, 10)


@pytest.mark.slow
def test_a_plugin_sweep_from_the_cli_in_a_users_folder(tmp_path):
    write_spec(tmp_path, spec_dict(**PLUGIN))
    done = subprocess.run(
        [CAVIAR, "sweep", "spec.yaml", "--run-dir", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    status = subprocess.run(
        [CAVIAR, "status", "spec.yaml", "--run-dir", "runs", "--json"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["trials"]["complete"] >= 1


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_the_python_api_runs_a_plugin_sweep_and_loads_its_champion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = caviar.sweep({"name": "api", **PLUGIN}, run_dir="runs", quiet=True)
    assert outcome.best.value is not None and outcome.champion == "models:/api@champion"
    assert outcome.where.run_dir.name == "runs"
    report = caviar.status({"name": "api", **PLUGIN}, run_dir="runs")
    assert report["best"]["trial"] == outcome.best.label
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where MLflow's copy goes
    model = caviar.load_champion("api", run_dir="runs")
    left = [p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [], "loading left a copy of the model behind"
    points = pd.DataFrame({"y": [0.5, -0.2], "x": [0.1, 0.3]})  # named columns, any order
    assert list(model.predict(points).columns) == ["arm-0", "arm-1", "arm-2"]
