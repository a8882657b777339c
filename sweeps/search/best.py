"""What a sweep finds: the best trial so far, how each trial ended, and the incumbent champion a
re-tune must beat."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.ranking import VAL_LOSS, rank_key
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
    """Best complete trial so far over all stages, by `ranking.rank_key`."""

    direction: Direction
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    number: int | None = None
    key: str | None = None  # its MLflow run key
    checkpoint: Path | None = None  # its saved weights, when they were kept
    val_loss: float | None = None  # its final validation loss, the first tie-breaker
    stage_index: int = 0

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.number}"

    def beaten_by(self, value: float, val_loss: float | None, stage: int, number: int) -> bool:
        """Whether a complete trial with these results ranks above the best so far."""
        if self.value is None or self.number is None:
            return True
        challenger = rank_key(self.direction, value, val_loss, stage, number)
        return challenger < rank_key(
            self.direction, self.value, self.val_loss, self.stage_index, self.number
        )

    def take(
        self, value: float, params: dict[str, Any], stage: tuple[int, str], trial: Any
    ) -> None:
        """Make `trial` (an Optuna trial, live or frozen, of stage (index, name)) the best."""
        self.value, self.params, self.number = value, params, trial.number
        self.stage_index, self.stage = stage
        self.key = trial.user_attrs.get(MLFLOW_RUN_KEY)
        self.val_loss = trial.user_attrs.get(VAL_LOSS)
        saved = trial.user_attrs.get(CHECKPOINT)
        self.checkpoint = Path(saved) if saved else None


@dataclass(frozen=True)
class Incumbent:
    """The champion a re-tune must beat: its registry version and its hyperparameters."""

    label: str
    values: dict[str, Any]


@dataclass
class Usage:
    """How busy the workers were: the epochs' own compute time against the slots' time
    during the trial phase (the first epoch started on a worker to the last trial ended).
    Times are wall-clock (`time.time()`), so they compare with other processes' clocks."""

    slots: int
    compute: float = 0.0  # seconds the reported epochs took, on their workers
    epochs: int = 0
    first: float | None = None  # when the first epoch started training on its worker
    last: float | None = None  # when the last trial ended

    def epoch(self, seconds: float) -> None:
        """An epoch's metrics arrived now; it trained for `seconds` before."""
        began = time.time() - seconds
        self.first = began if self.first is None else min(self.first, began)
        self.compute += seconds
        self.epochs += 1

    def ended(self) -> None:
        self.last = time.time()

    @property
    def wall(self) -> float:
        return (self.last - self.first) if self.first and self.last else 0.0

    @property
    def efficiency(self) -> float:
        """Share of the slots' time spent training epochs (1.0: no worker ever idle)."""
        return self.compute / (self.slots * self.wall) if self.wall else 0.0
