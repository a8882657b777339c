"""The Ray actor body that trains trials: holds the data and the trial being trained.

It runs on two threads: training calls (`begin`, `next_epoch`, `weights`, `end`) run in order
on one, and `stop` runs on the other (its own concurrency group), so the driver can stop an
epoch the worker started ahead of time (see `executor`) between two mini-batches.
"""

from __future__ import annotations

import os
import threading

import ray

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.executor import Weights
from caviar.models.metrics import EpochMetrics
from caviar.models.train import EpochAborted, Trainer

CONCURRENCY_GROUPS = {"control": 1}


class TrialWorker:
    """One trial at a time, one epoch per call; the driver decides whether there is another."""

    def __init__(self, data: Dataset, threads: int) -> None:
        self.data = data
        self.threads = threads
        self.trainer: Trainer | None = None
        self._key: int | None = None  # the trial being trained
        self._stop = threading.Event()

    def begin(self, key: int, model: ModelConfig, train: TrainConfig) -> EpochMetrics | None:
        self._key = key
        self._stop.clear()
        self.trainer = Trainer(self.data, model, train, threads=self.threads)
        return self._epoch()

    def next_epoch(self) -> EpochMetrics | None:
        """The next epoch's metrics; None when it was stopped before it finished."""
        return self._epoch()

    @ray.method(concurrency_group="control")
    def stop(self, key: int) -> None:
        """Stop trial `key`'s epoch in progress (or next); a later trial is not affected."""
        if self._key == key:
            self._stop.set()

    def weights(self) -> Weights:
        assert self.trainer is not None, "begin a trial first"
        return self.trainer.weights()

    def end(self) -> None:
        self.trainer = None
        self._key = None

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        return os.getpid()

    def _epoch(self) -> EpochMetrics | None:
        assert self.trainer is not None, "begin a trial first"
        try:
            return self.trainer.run_epoch(self._stop.is_set)
        except EpochAborted:
            return None
