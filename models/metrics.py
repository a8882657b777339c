"""One epoch's report: what a worker sends back and the driver reports to Optuna and MLflow."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's report. Losses are mean cross-entropy; `epoch` counts from 1."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float

    @property
    def diverged(self) -> bool:
        """A non-finite loss: the trial cannot recover and ends as failed ("diverged")."""
        return not (math.isfinite(self.train_loss) and math.isfinite(self.val_loss))

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k != "epoch"}
