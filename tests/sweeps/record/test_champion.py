"""The champion: the best trial's network, logged, registered and loadable from the registry."""

from __future__ import annotations

import json

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch

from caviar.models.data import DigitsSource, build_dataset
from caviar.models.inprocess import InProcessExecutor
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


def test_champion_loads_from_the_registry_and_reproduces_its_test_accuracy(swept, registry):
    data = build_dataset(swept.spec.data)
    model = mlflow.pytorch.load_model("models:/tiny@champion")
    with torch.no_grad():
        probabilities = model(torch.from_numpy(data.raw(data.x_test)))
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(data.y_test)), atol=1e-5)
    accuracy = float((probabilities.argmax(dim=1).numpy() == data.y_test).mean())
    version = registry.get_model_version_by_alias("tiny", "champion")
    recorded = registry.get_run(version.run_id).data.metrics["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-9)
    assert accuracy > 0.5  # ten classes: far above chance


def test_champion_carries_signature_input_example_and_classes(swept, registry):
    version = registry.get_model_version_by_alias("tiny", "champion")
    info = mlflow.models.get_model_info(f"models:/tiny/{version.version}")
    assert info.signature is not None
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 64)
    assert info.saved_input_example_info is not None
    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny/{version.version}")
    data = build_dataset(swept.spec.data)
    predicted = pyfunc.predict(data.raw(data.x_test[:7]))
    assert np.asarray(predicted).shape == (7, 10)
    assert json.loads(version.tags["classes"]) == [str(i) for i in range(10)]


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
        model = mlflow.pytorch.load_model("models:/tiny@champion")
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.raw(data.x_val))).argmax(dim=1).numpy()
    # Same configuration, seed and data: the retrained network is the trial's network.
    assert float((predicted == data.y_val).mean()) == pytest.approx(sweep.best.value, abs=1e-6)
