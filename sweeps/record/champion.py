"""The champion: the best trial's trained network, logged and registered in MLflow.

While a sweep runs, each trial that becomes the best has its weights saved to a checkpoint in
the run directory (a NumPy archive; milliseconds; nothing is lost if the driver dies). When
the sweep ends, the best checkpoint becomes an MLflow model on its trial's run: raw inputs in
(the training split's scaling is part of the model), class probabilities out, saved in
PyTorch's exported graph format with an input example and signature, registered under the
sweep's name with the alias `champion`. The model folder is built by a `ChampionBuilder` in
another process, ready by then (`champion_export`): the driver never loads torch. A champion
whose weights were lost (with its worker, or its run directory) is trained again from its
configuration and seed, which reproduces the network.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.errors import CaviarError
from caviar.models.executor import Trained, TrialExecutor, TrialJob, Weights, run_to_completion
from caviar.models.families import model_config
from caviar.sweeps.record.champion_export import BuiltChampion, checkpoint_bytes, export_view
from caviar.sweeps.record.hosted import Host
from caviar.sweeps.record.tracking import Tracker


@dataclass(frozen=True)
class Candidate:
    """The best trial of a sweep, as the champion sees it."""

    key: str | None  # its MLflow run key
    label: str  # "stage#number"
    value: float
    checkpoint: Path | None  # its saved weights, when they were kept
    model: ModelConfig  # what to train again if they were not
    train: TrainConfig
    reference: dict[int, float]  # its scores by seed: what `caviar retest` compares with


class ChampionKeeper:
    def __init__(
        self,
        data: Dataset,
        tracker: Tracker,
        folder: Path,
        model_name: str,
        note: Callable[[str], None],
        builder: Host,
    ) -> None:
        """`note` hears what happens to the champion (a progress line); `builder` reaches the
        `ChampionBuilder` that makes its model folder."""
        self.data = data
        self.tracker = tracker
        self.folder = folder
        self.model_name = model_name
        self.note = note
        self.builder = builder

    def ready(self) -> None:
        """Have the builder get ready now (it is needed at the end; readying takes seconds)."""
        self.builder.start()

    def keep(self, label: str, model: ModelConfig, weights: Weights) -> Path:
        """Save a new best trial's network; returns the checkpoint's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{label.replace('#', '-')}.npz"
        path.write_bytes(checkpoint_bytes(model.model_dump(mode="json"), weights))
        return path

    def checkpoint(
        self, executor: TrialExecutor, key: int, label: str, model: ModelConfig
    ) -> Path | None:
        """Keep the weights of trial `key` (before its worker is released); None if gone."""
        weights = executor.weights(key)
        if weights is None:
            self.note(f"trial {label}: worker gone, weights not kept")
            return None
        return self.keep(label, model, weights)

    def publish_best(self, best: Candidate, executor: TrialExecutor, metric: str) -> float | None:
        """Log and register `best` (retraining it if its weights were lost); returns its test
        accuracy, or None when it could not be published (the reason is noted)."""
        if best.key is None:
            self.note(f"champion {best.label}: it has no MLflow run; not logged")
            return None
        checkpoint = best.checkpoint
        if checkpoint is None or not checkpoint.exists():
            checkpoint = self.retrain(best, executor)
            if checkpoint is None:
                self.note(f"champion {best.label}: could not be retrained; not logged")
                return None
        accuracy = self.publish(best, checkpoint, metric)
        self.note(
            f"champion {best.label}: registered as '{self.model_name}@champion', "
            f"test accuracy {accuracy:.4f}"
        )
        return accuracy

    def retrain(self, best: Candidate, executor: TrialExecutor) -> Path | None:
        """Train the candidate's configuration again (same seed and data: the same network)."""
        why = "its weights were lost" if best.checkpoint else "its weights were not kept"
        self.note(
            f"champion {best.label}: {why}; retraining its configuration (seed "
            f"{best.train.seed}), which reproduces it"
        )
        key = -1  # no Optuna trial has a negative number
        done = run_to_completion(executor, [TrialJob(key, best.model, best.train)], True)[key]
        if not isinstance(done, Trained) or done.weights is None:
            return None
        return self.keep(best.label, best.model, done.weights)

    def publish(self, best: Candidate, checkpoint: Path, metric: str) -> float:
        """Log the champion as an MLflow model, register it, alias it; returns its test accuracy."""
        assert best.key is not None
        built = self.build(best.model.model_dump(mode="json"), checkpoint)
        if built.fallback:
            self.note(
                f"champion {best.label}: torch.export cannot capture this network "
                f"({built.fallback}); it is saved pickled (network.pt) instead, which "
                f"loads only where {built.package} is installed"
            )
        with tempfile.TemporaryDirectory() as folder:
            self.tracker.publish_model(
                best.key,
                built.unpack(Path(folder)),
                self.model_name,
                metrics={"test_accuracy": built.test_accuracy},
                tags=self._version_tags(best, metric, built.test_accuracy),
            )
        return built.test_accuracy

    def build(self, model: dict[str, Any], checkpoint: Path) -> BuiltChampion:
        """The champion's model folder, from the builder; a builder that stopped is started
        again once (a fresh one readies itself first)."""
        args = (export_view(self.data), model, checkpoint.read_bytes(), checkpoint.suffix)
        try:
            return cast(BuiltChampion, self.builder("build", *args))
        except ConnectionError:
            return cast(BuiltChampion, self.builder("build", *args))

    def _version_tags(self, best: Candidate, metric: str, accuracy: float) -> dict[str, str]:
        return {
            "trial": best.label,
            "sweep": self.tracker.sweep,
            "metric": metric,
            metric: repr(best.value),
            "test_accuracy": f"{accuracy:.6g}",
            "classes": json.dumps(list(self.data.classes)),
            "features": json.dumps(list(self.data.features)),
            "reference": reference_json(best.reference),
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def reference_json(reference: dict[int, float]) -> str:
    """A champion's reference scores by seed, as its registry version keeps them."""
    return json.dumps({"seeds": list(reference), "scores": list(reference.values())})


@dataclass(frozen=True)
class Champion:
    """The registered champion: where it came from and the configuration that made it."""

    version: str
    run_id: str
    trial: str  # "stage#number"
    sweep: str  # the sweep (or re-tune) that produced it
    score: float  # the objective when it became champion
    promoted_at: datetime
    model: ModelConfig
    train: TrainConfig
    params: dict[str, Any]  # every config field, as logged
    reference: dict[int, float]  # its scores by seed when last measured (seed -> score)
    rebased_at: datetime | None = None  # a re-tune kept it and measured it again
    features: tuple[str, ...] = ()  # the input columns it takes, in order (empty: unknown)
    classes: tuple[str, ...] = ()  # the labels it answers with

    def schema_changes(self, features: tuple[str, ...], classes: tuple[str, ...]) -> list[str]:
        """How data with these columns and labels differs from what the champion serves (it
        takes its inputs by name: an order is no change)."""
        changes = []
        for what, now, then in (("feature columns", features, self.features),
                                ("classes", classes, self.classes)):  # fmt: skip
            new, gone = [x for x in now if x not in then], [x for x in then if x not in now]
            if then and (new or gone):
                changes.append(f"its {what} changed: new {_few(new)}; gone {_few(gone)}")
        return changes

    def age_days(self, now: datetime) -> float:
        """Days since it became champion, or since a re-tune last confirmed it."""
        since = max(self.promoted_at, self.rebased_at or self.promoted_at)
        return (now - since).total_seconds() / 86400

    @property
    def reference_score(self) -> float:
        """What a re-test compares with: the mean of its reference scores."""
        scores = list(self.reference.values())
        return sum(scores) / len(scores) if scores else self.score

    def values(self, searched: Iterable[str]) -> dict[str, Any]:
        """The champion's values of the `searched` hyperparameters."""
        return {name: self.params[name] for name in searched if name in self.params}


def _few(names: list[str]) -> str:
    """Up to five names, then how many in all."""
    if not names:
        return "none"
    shown = ", ".join(repr(name) for name in names[:5])
    return shown if len(names) <= 5 else f"{shown}, ... ({len(names)} in all)"


def find_champion(tracking_uri: str, model_name: str, metric: str) -> Champion:
    """The version with alias `champion` of registered model `model_name`, with its score in
    `metric`; CaviarError if there is none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        raise CaviarError(
            f"no champion for '{model_name}' in MLflow at {tracking_uri}; run "
            "`caviar sweep` on this spec first"
        ) from None
    if version.run_id is None:
        raise CaviarError(f"champion v{version.version} of '{model_name}' has no run")
    params = {k: _parse(v) for k, v in client.get_run(version.run_id).data.params.items()}
    promoted = version.tags.get("promoted_at")
    rebased = version.tags.get("rebased_at")
    return Champion(
        version=str(version.version),
        run_id=version.run_id,
        trial=version.tags.get("trial", "?"),
        sweep=version.tags.get("sweep", model_name),
        score=float(version.tags[metric]),
        promoted_at=(
            datetime.fromisoformat(promoted)
            if promoted
            else datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
        ),
        model=model_config(params, among=True),
        train=TrainConfig.model_validate(
            {k: v for k, v in params.items() if k in TrainConfig.model_fields}
        ),
        params=params,
        reference=_reference(version.tags.get("reference")),
        rebased_at=datetime.fromisoformat(rebased) if rebased else None,
        features=tuple(json.loads(version.tags.get("features", "[]"))),
        classes=tuple(json.loads(version.tags.get("classes", "[]"))),
    )


def _reference(text: str | None) -> dict[int, float]:
    """The `reference` tag back as seed -> score (empty for champions from before it)."""
    if not text:
        return {}
    recorded = json.loads(text)
    return dict(zip(map(int, recorded["seeds"]), map(float, recorded["scores"]), strict=True))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
