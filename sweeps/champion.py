"""The champion: the best trial's trained network, logged and registered in MLflow.

While a sweep runs, each trial that becomes the best has its weights saved to a checkpoint in
the run directory (milliseconds; nothing is lost if the driver dies). When the sweep ends, the
best checkpoint becomes an MLflow model on its trial's run: raw inputs in (the training
split's scaling is part of the model), class probabilities out, saved in PyTorch's exported
graph format with an input example and signature, registered under the sweep's name with the
alias `champion`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from models.data import Dataset
from models.net import ModelConfig, build_network, deployable
from sweeps.tracking import Tracker


@dataclass(frozen=True)
class Candidate:
    """A trial that was the best when it finished."""

    key: str  # its MLflow run key
    label: str  # "stage#number"
    value: float
    checkpoint: Path


class ChampionKeeper:
    def __init__(self, data: Dataset, tracker: Tracker, folder: Path, model_name: str) -> None:
        self.data = data
        self.tracker = tracker
        self.folder = folder
        self.model_name = model_name

    def keep(self, label: str, model: ModelConfig, weights: dict[str, torch.Tensor]) -> Path:
        """Save a new best trial's network; returns the checkpoint's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{label.replace('#', '-')}.pt"
        torch.save({"model": model.model_dump(mode="json"), "weights": weights}, path)
        return path

    def network(self, checkpoint: Path) -> torch.nn.Module:
        """The deployable network of a checkpoint: raw inputs -> class probabilities."""
        saved = torch.load(checkpoint, weights_only=True)
        network = build_network(
            self.data.n_features, self.data.n_classes, ModelConfig.model_validate(saved["model"])
        )
        network.load_state_dict(saved["weights"])
        return deployable(
            network, torch.from_numpy(self.data.mean), torch.from_numpy(self.data.std)
        )

    def test_accuracy(self, network: torch.nn.Module) -> float:
        with torch.no_grad():
            probabilities = network(torch.from_numpy(self.data.raw(self.data.x_test)))
        return float((probabilities.argmax(dim=1).numpy() == self.data.y_test).mean())

    def publish(self, best: Candidate, metric: str) -> float:
        """Log the champion as an MLflow model, register it, alias it; returns its test accuracy."""
        import mlflow.pytorch
        from mlflow.models import infer_signature

        network = self.network(best.checkpoint)
        accuracy = self.test_accuracy(network)
        example = self.data.raw(self.data.x_test[:5])
        with torch.no_grad():
            signature = infer_signature(example, network(torch.from_numpy(example)).numpy())
        with tempfile.TemporaryDirectory() as folder:
            model_dir = Path(folder) / "model"
            classes = Path(folder) / "classes.json"
            classes.write_text(json.dumps(list(self.data.classes)))
            mlflow.pytorch.save_model(
                network,
                model_dir,
                signature=signature,
                input_example=np.ascontiguousarray(example),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                extra_files=[str(classes)],
            )
            self.tracker.publish_model(
                best.key,
                model_dir,
                self.model_name,
                metrics={"test_accuracy": accuracy},
                tags={
                    "trial": best.label,
                    "sweep": self.tracker.sweep,
                    "metric": metric,
                    metric: repr(best.value),
                    "test_accuracy": f"{accuracy:.6g}",
                    "classes": json.dumps(list(self.data.classes)),
                    "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        return accuracy
