"""End to end through the `caviar` CLI: real Ray, real Optuna storage, real MLflow store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from caviar.sweeps.search.studies import (
    FAIL_REASON,
    INTERRUPTED,
    default_storage,
    open_storage,
    study_name,
)
from caviar.sweeps.views.cli import app
from tests.conftest import TWO_STAGES, spec_dict, write_spec

runner = CliRunner()


def caviar(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def status_json(spec: Path, run_dir: Path) -> dict:
    result = caviar("status", spec, "--json", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def mlflow_runs(run_dir: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id], max_results=1000)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_sweep_status_report_and_mlflow_end_to_end(tmp_path):
    spec = write_spec(tmp_path, spec_dict(stages=TWO_STAGES))
    run_dir = tmp_path / "runs"
    result = caviar("sweep", spec, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "best" in result.output and "box around the best 2 trial(s) so far" in result.output

    report = status_json(spec, run_dir)
    assert set(report) == {"name", "trials", "best", "stages", "selection", "mlflow"}
    assert report["name"] == "tiny" and report["mlflow"] == {"waiting": 0, "refused": []}
    trials = report["trials"]
    assert set(trials) == {"complete", "pruned", "failed", "running"}
    assert trials["complete"] + trials["pruned"] + trials["failed"] == 12
    assert trials["running"] == 0 and trials["pruned"] > 0
    assert 0 < report["best"]["value"] <= 1
    assert set(report["best"]["params"]) == {"lr", "momentum"}
    coarse, fine = report["stages"]
    assert (coarse["name"], coarse["box"]["lr"]) == ("coarse", [1e-4, 1.0])
    assert 1e-4 <= fine["box"]["lr"][0] < fine["box"]["lr"][1] <= 1.0
    assert sum(fine["trials"].values()) == 4

    client, runs = mlflow_runs(run_dir, "tiny")
    parents = [r for r in runs if r.data.tags.get("caviar.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("caviar.role") == "trial"]
    assert len(parents) == 1 and len(children) == 12
    assert sorted(r.data.tags["stage"] for r in children) == ["coarse"] * 8 + ["fine"] * 4
    assert parents[0].info.status == "FINISHED"
    assert float(parents[0].data.tags["best.value"]) == pytest.approx(report["best"]["value"])
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        curve = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and curve
        assert child.info.status in ("FINISHED", "KILLED")
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"spec.yaml", "resolved_spec.yaml"} <= artifacts
    champion = client.get_model_version_by_alias("tiny", "champion")  # built by a child process
    assert champion.tags["trial"] == report["best"]["trial"]
    assert 0 < float(champion.tags["test_accuracy"]) <= 1

    html = caviar("report", spec, "--run-dir", run_dir)
    assert html.exit_code == 0, html.output
    page = run_dir / "reports" / "tiny.html"
    assert page.read_text().count("Plotly.newPlot") == 5
    assert "tiny.html" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}

    again = caviar("sweep", spec, "--run-dir", run_dir)
    assert again.exit_code == 0, again.output
    assert status_json(spec, run_dir)["trials"] == trials
    assert len(mlflow_runs(run_dir, "tiny")[1]) == len(runs), "a finished sweep runs nothing new"


def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path, spec_dict(stages=[{"name": "s", "trials": -1}]))
    run_dir = tmp_path / "runs"
    result = caviar("sweep", spec, "--run-dir", run_dir)
    assert result.exit_code == 2
    assert "stages[0].trials" in result.output and "Traceback" not in result.output
    assert not run_dir.exists()


def test_bad_data_file_exits_2_naming_the_file(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n3,4\n")
    spec = write_spec(
        tmp_path, spec_dict(data={"source": "csv", "path": "table.csv", "target": "y"})
    )
    result = caviar("sweep", spec, "--run-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "table.csv: no column 'y'" in result.output
    assert not (tmp_path / "runs").exists()


def test_console_script_reports_errors_without_traceback(tmp_path):
    spec = write_spec(tmp_path, spec_dict(space={"lr": {"scale": "log", "low": -1, "high": 1}}))
    done = subprocess.run(
        [Path(sys.executable).parent / "caviar", "validate", spec], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "space.lr.low" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_benchmarks_report_a_missing_spec_without_traceback(tmp_path):
    root = Path(__file__).resolve().parents[1]  # `python -m bench` runs from the repository
    done = subprocess.run(
        [sys.executable, "-m", "bench", "tracking", tmp_path / "nothere.yaml", "--out", tmp_path],
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    assert done.returncode == 2
    assert "nothere.yaml: file not found" in done.stderr and "Traceback" not in done.stderr


def test_status_of_a_sweep_never_run_creates_nothing(tmp_path):
    spec = write_spec(tmp_path)
    report = status_json(spec, tmp_path / "runs")
    none = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    assert report == {
        "name": "tiny",
        "trials": none,
        "best": {"trial": None, "value": None, "params": {}},
        "stages": [{"name": "search", "budget": 8, "trials": none, "box": None}],
        "selection": None,
        "mlflow": {"waiting": 0, "refused": []},
    }
    assert not (tmp_path / "runs").exists()
    missing = caviar("report", spec, "--run-dir", tmp_path / "runs")
    assert missing.exit_code == 2 and "run `caviar sweep" in missing.output


def test_train_prints_a_learning_curve(tmp_path):
    spec = write_spec(tmp_path)
    result = caviar("train", spec, "--set", "lr=0.1", "--set", "hidden_units=16", "--epochs", "3")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if re.match(r"\s*\d+\s+\d", line)]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert all(0 <= float(r[3]) <= 1 for r in rows)  # val_accuracy column
    assert "hidden_units=16" in result.output and "lr=0.1" in result.output


def test_train_rejects_unknown_or_invalid_overrides(tmp_path):
    spec = write_spec(tmp_path)
    unknown = caviar("train", spec, "--set", "learning_rate=0.1")
    assert (
        unknown.exit_code == 2 and "--set learning_rate: unknown hyperparameter" in unknown.output
    )
    invalid = caviar("train", spec, "--set", "momentum=1.5")
    assert invalid.exit_code == 2 and "--set momentum" in invalid.output


def test_validate_summarises_a_good_spec(tmp_path):
    result = caviar("validate", write_spec(tmp_path))
    assert result.exit_code == 0 and "valid" in result.output and "log1m" in result.output


SLOW_SPEC = spec_dict(
    name="killed",
    model={"hidden_units": 384, "layers": 3},
    train={"epochs": 25, "batch_size": 16},
    stages=[{"name": "search", "trials": 6}],  # no pruner: every trial runs all its epochs
)


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_a_killed_driver_resumes_to_exactly_its_budget(tmp_path):
    spec = write_spec(tmp_path, SLOW_SPEC)
    run_dir = tmp_path / "runs"
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        [Path(sys.executable).parent / "caviar", "sweep", spec, "--run-dir", run_dir],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its embedded Ray dies with it
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert driver.poll() is None, f"the driver ended early:\n{log.read_text()}"
            report = status_json(spec, run_dir) if (run_dir / "optuna.journal").exists() else None
            if report and report["trials"]["complete"] >= 1 and report["trials"]["running"] >= 1:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the sweep never got going:\n{log.read_text()}")
        busy = caviar("sweep", spec, "--run-dir", run_dir)
        assert busy.exit_code == 2 and "already running" in busy.output
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()

    before = optuna.load_study(
        study_name=study_name("killed", "search"),
        storage=open_storage(default_storage(run_dir)),
    )
    kept = {t.number: t.params for t in before.trials if t.state.is_finished()}
    assert any(not t.state.is_finished() for t in before.trials), "killed mid-trial"

    resumed = caviar("sweep", spec, "--run-dir", run_dir)
    assert resumed.exit_code == 0, resumed.output
    after = optuna.load_study(
        study_name=study_name("killed", "search"),
        storage=open_storage(default_storage(run_dir)),
    )
    interrupted = [t for t in after.trials if t.user_attrs.get(FAIL_REASON) == INTERRUPTED]
    assert interrupted, "the trials the dead driver left running are marked"
    assert len(after.trials) - len(interrupted) == 6, "exactly the budget, nothing run twice"
    for number, params in kept.items():
        assert after.trials[number].params == params
    _, runs = mlflow_runs(run_dir, "killed")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags.get("caviar.role") == "trial"]) == len(after.trials)


EXIT = """
import atexit, gc, sys
from caviar.sweeps.views.cli import main
atexit.register(lambda: print("frozen", gc.get_freeze_count(), flush=True))
sys.argv = ["caviar", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", "no-such-spec.yaml"]])
def test_the_command_leaves_its_objects_out_of_the_last_garbage_collection(args):
    """The interpreter's final collection would walk every object MLflow, Ray and Optuna made
    (a second of a sweep's exit); the command freezes them on its way out, on success and on
    error alike, and its atexit handlers still run."""
    done = subprocess.run([sys.executable, "-c", EXIT, *args], capture_output=True, text=True)
    frozen = re.search(r"frozen (\d+)", done.stdout)
    assert frozen is not None, done.stdout + done.stderr
    assert int(frozen.group(1)) > 10_000
    assert done.returncode == (0 if args == ["--help"] else 2), done.stderr
