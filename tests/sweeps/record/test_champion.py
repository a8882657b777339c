"""The champion: the best trial's network, logged, registered and loadable from the registry."""

from __future__ import annotations

import json
import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest

from caviar.models.data import build_dataset
from caviar.models.families import build_network, model_config
from caviar.models.inprocess import InProcessExecutor
from caviar.models.sources import DigitsSource
from caviar.sweeps.record import champion_export
from caviar.sweeps.record.champion_export import checkpoint_bytes, raw_frame, warm_up
from caviar.sweeps.search.studies import CHAMPION, CHECKPOINT
from tests.conftest import run_local_sweep


@pytest.fixture
def registry(swept):
    uri = f"sqlite:///{swept.folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(previous)


def test_champion_is_registered_under_the_sweep_name(swept, registry):
    version = registry.get_model_version_by_alias("tiny", "champion")
    best_run = registry.get_run(version.run_id)
    assert best_run.data.tags["trial"] == str(swept.best.number)
    assert best_run.data.tags["stage"] == swept.best.stage
    assert version.tags["trial"] == swept.best.label
    assert float(version.tags["val_accuracy"]) == pytest.approx(swept.best.value, abs=1e-6)
    assert swept.parent().data.tags["champion"] == swept.best.label
    assert swept.study("coarse").user_attrs[CHAMPION] == swept.best.label


def test_champion_loads_from_the_registry_and_reproduces_its_test_accuracy(
    swept, registry, tmp_path
):
    data = build_dataset(swept.spec.data)
    model = mlflow.pyfunc.load_model("models:/tiny@champion", dst_path=str(tmp_path))
    probabilities = model.predict(raw_frame(data, data.x_test))
    assert list(probabilities.columns) == [str(i) for i in range(10)]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predicted = probabilities.idxmax(axis=1).to_numpy()
    accuracy = float((predicted == np.asarray(data.classes)[data.y_test]).mean())
    version = registry.get_model_version_by_alias("tiny", "champion")
    recorded = registry.get_run(version.run_id).data.metrics["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-9)
    assert accuracy > 0.5  # ten classes: far above chance


def test_champion_carries_signature_input_example_and_classes(
    swept, registry, tmp_path, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # MLflow's copy of MLmodel goes there
    version = registry.get_model_version_by_alias("tiny", "champion")
    info = mlflow.models.get_model_info(f"models:/tiny/{version.version}")
    assert info.signature.inputs.input_names() == [f"pixel_{i}" for i in range(64)]
    assert info.signature.outputs.input_names() == [str(i) for i in range(10)]
    assert info.saved_input_example_info is not None
    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny/{version.version}", dst_path=str(tmp_path))
    data = build_dataset(swept.spec.data)
    labels = pyfunc.predict(raw_frame(data, data.x_test[:7]), params={"output": "label"})
    assert list(labels.columns) == ["label"] and len(labels) == 7
    assert set(labels["label"]) <= set(data.classes)
    assert json.loads(version.tags["classes"]) == [str(i) for i in range(10)]
    holed = raw_frame(data, data.x_test[:3])
    holed.iloc[1, 5] = float("nan")  # one missing input: that row alone goes unanswered
    answered = pyfunc.predict(holed, params={"output": "label"})["label"]
    assert pd.isna(answered.iloc[1]) and list(answered.iloc[[0, 2]]) == list(labels["label"][:3:2])


def test_every_new_best_is_checkpointed(swept):
    trials = swept.study("coarse").trials + swept.study("fine").trials
    kept = [t for t in trials if CHECKPOINT in t.user_attrs]
    assert any(t.number == swept.best.number for t in kept)
    values = [t.value for t in sorted(kept, key=lambda t: t.datetime_complete)]
    assert values == sorted(values), "a checkpoint is kept only when a trial beats the best"


def test_a_resumed_sweep_without_a_better_trial_keeps_the_champion(tmp_path):
    run_local_sweep(tmp_path, {"stages": [{"name": "search", "trials": 3}]})
    run_local_sweep(tmp_path, {"stages": [{"name": "search", "trials": 3}]})
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_model_versions("name = 'tiny'")) == 1


class WeightsLost(InProcessExecutor):
    """Workers that vanish right after their last epoch: no trial's weights can be fetched."""

    def weights(self, key):
        return None if key >= 0 else super().weights(key)


def test_a_champion_whose_weights_were_lost_is_retrained_identically(tmp_path):
    data = build_dataset(DigitsSource(source="digits"))
    sweep = run_local_sweep(tmp_path, {"stages": [{"name": "search", "trials": 3}]},
                            executor=WeightsLost(data))  # fmt: skip
    assert any("retraining" in note for note in sweep.progress.notes)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/tiny@champion", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    predicted = model.predict(raw_frame(data, data.x_val)).idxmax(axis=1).to_numpy()
    # Same configuration, seed and data: the retrained network is the trial's network.
    accuracy = float((predicted == np.asarray(data.classes)[data.y_val]).mean())
    assert accuracy == pytest.approx(sweep.best.value, abs=1e-6)


def user_csv(path, rows=600):
    """A user's file: columns not in sorted order, string labels, features on their own
    scales; the class is decided by which of three columns is largest after centring."""
    rng = np.random.default_rng(7)
    signal = rng.normal(size=(rows, 3))
    frame = pd.DataFrame(
        {
            "temperature": 20.0 + 5.0 * signal[:, 0],
            "species": np.array(["oak", "ash", "elm"])[signal.argmax(axis=1)],
            "humidity": 60.0 + 10.0 * signal[:, 1],
            "altitude": (300 + 100 * signal[:, 2]).round().astype(int),
            "noise": rng.normal(size=rows),
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_champion_takes_a_users_columns_by_name_in_any_order(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # MLflow's copy of MLmodel goes there
    frame = user_csv(tmp_path / "trees.csv")
    data_spec = {"source": "csv", "path": "trees.csv", "target": "species"}
    space = {"lr": {"scale": "log", "low": 0.05, "high": 0.3}}
    run_local_sweep(
        tmp_path,
        {"data": data_spec, "space": space, "train": {"epochs": 15, "batch_size": 32},
         "stages": [{"name": "search", "trials": 2}]},
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("tiny", "champion")
    recorded = client.get_run(version.run_id).data.metrics["test_accuracy"]
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/tiny@champion", dst_path=str(tmp_path))
        inputs = mlflow.models.get_model_info("models:/tiny@champion").signature.inputs
    finally:
        mlflow.set_tracking_uri(None)
    assert [(c.name, c.type.name) for c in inputs.inputs] == [
        ("temperature", "double"), ("humidity", "double"), ("altitude", "long"),
        ("noise", "double"),
    ]  # fmt: skip
    shuffled = frame[["noise", "altitude", "species", "humidity", "temperature"]]
    for rows in (frame, shuffled):  # the file's order, and any other: columns go by name
        predicted = model.predict(rows, params={"output": "label"})["label"]
        accuracy = float((predicted.to_numpy() == frame["species"].to_numpy()).mean())
        assert accuracy == pytest.approx(recorded, abs=0.05), (accuracy, recorded)
    assert recorded > 0.8
    assert json.loads(version.tags["features"]) == ["temperature", "humidity", "altitude", "noise"]


def test_readying_the_champions_export_leaves_no_files_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its scratch files go
    warm_up()
    ours = [p for p in tmp_path.iterdir() if not p.name.startswith("torchinductor_")]
    assert ours == [], "a scratch folder per sweep was left in the temporary directory"


def test_a_builder_that_could_not_ready_itself_still_builds_the_champion(monkeypatch, tmp_path):
    def broken() -> None:
        raise RuntimeError("no head start today")

    monkeypatch.setattr(champion_export, "warm_up", broken)
    builder = champion_export.ChampionBuilder()  # a warning, not an error
    data = build_dataset(DigitsSource(source="digits"))
    model = {"family": "mlp", "hidden_units": 8, "layers": 1}
    network = build_network(data.n_features, data.n_classes, model_config(model))
    weights = {name: value.detach().numpy() for name, value in network.state_dict().items()}
    built = builder.build(
        champion_export.export_view(data), model, checkpoint_bytes(model, weights), ".npz"
    )
    assert 0 <= built.test_accuracy <= 1 and built.fallback is None
    assert (built.unpack(tmp_path) / "MLmodel").is_file()
