"""What a sweep finds: the best trial so far, how each trial ended, and the incumbent champion a
re-tune must beat."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.studies import CHECKPOINT, MLFLOW_RUN_KEY


@dataclass(frozen=True)
class TrialEnd:
    """How a trial ended, as progress displays and summaries see it."""

    stage: str
    number: int
    state: str  # complete, pruned or failed
    value: float | None
    params: dict[str, Any]
    epochs: int
    reason: str | None = None


@dataclass
class Best:
    """Best complete trial so far over all stages."""

    direction: Direction
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    number: int | None = None
    key: str | None = None  # its MLflow run key
    checkpoint: Path | None = None  # its saved weights, when they were kept

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.number}"

    def beaten_by(self, value: float) -> bool:
        return self.direction.better(value, self.value)

    def take(
        self, value: float, params: dict[str, Any], stage: str, trial: FrozenTrial | Any
    ) -> None:
        """Make `trial` (an Optuna trial, live or frozen) the best."""
        self.value, self.params, self.stage, self.number = value, params, stage, trial.number
        self.key = trial.user_attrs.get(MLFLOW_RUN_KEY)
        saved = trial.user_attrs.get(CHECKPOINT)
        self.checkpoint = Path(saved) if saved else None


@dataclass(frozen=True)
class Incumbent:
    """The champion a re-tune must beat: its registry version and its hyperparameters."""

    label: str
    values: dict[str, Any]
