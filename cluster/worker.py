"""The Ray actor body that trains trials: holds the data and the trial being trained."""

from __future__ import annotations

import os

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.executor import Weights
from caviar.models.metrics import EpochMetrics
from caviar.models.train import Trainer


class TrialWorker:
    """One trial at a time, one epoch per call; the driver decides whether there is another."""

    def __init__(self, data: Dataset, threads: int) -> None:
        self.data = data
        self.threads = threads
        self.trainer: Trainer | None = None

    def begin(self, model: ModelConfig, train: TrainConfig) -> EpochMetrics:
        self.trainer = Trainer(self.data, model, train, threads=self.threads)
        return self.trainer.run_epoch()

    def next_epoch(self) -> EpochMetrics:
        assert self.trainer is not None, "begin a trial first"
        return self.trainer.run_epoch()

    def weights(self) -> Weights:
        assert self.trainer is not None, "begin a trial first"
        return self.trainer.weights()

    def end(self) -> None:
        self.trainer = None

    def pid(self) -> int:
        return os.getpid()
