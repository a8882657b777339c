"""The boundary between the driver and whatever trains the trials.

The driver starts a trial, then after each reported epoch either lets it go on (`proceed`) or
ends it (`release`). Workers never decide; they train one epoch when told. Production uses the
Ray executor in `cluster/`; `InProcessExecutor` runs trials one epoch at a time in this process,
so the search logic can be tested without starting Ray.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import torch

from models.data import Dataset
from models.net import ModelConfig
from models.train import EpochMetrics, TrainConfig, Trainer


@dataclass(frozen=True)
class TrialJob:
    key: int
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class EpochDone:
    """A trial finished an epoch and waits to be told whether to go on."""

    key: int
    metrics: EpochMetrics


@dataclass(frozen=True)
class WorkerLost:
    """The trial's worker died; the executor restarted the trial from its first epoch."""

    key: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class TrialCrashed:
    """The trial cannot go on: an error in training, or its worker died too often."""

    key: int
    reason: str


Event = EpochDone | WorkerLost | TrialCrashed


class TrialExecutor(Protocol):
    @property
    def slots(self) -> int:
        """How many trials can run at once."""
        ...

    def start(self, job: TrialJob) -> None:
        """Build the trial's network and train its first epoch."""

    def proceed(self, key: int) -> None:
        """Train the trial's next epoch."""

    def release(self, key: int) -> None:
        """The trial is over; free its worker."""

    def weights(self, key: int) -> dict[str, torch.Tensor] | None:
        """The trial's network weights (on the CPU), before it is released; None if its
        worker is gone."""
        ...

    def wait(self, timeout: float) -> list[Event]:
        """Events that arrived, waiting up to `timeout` seconds for the first one."""
        ...

    def close(self) -> None:
        """Stop all workers."""


class InProcessExecutor:
    """Runs trials in this process, one epoch per `wait` call, in the order they were asked."""

    def __init__(self, data: Dataset, slots: int = 2) -> None:
        self.data = data
        self._slots = slots
        self._trainers: dict[int, Trainer] = {}
        self._due: deque[int] = deque()

    @property
    def slots(self) -> int:
        return self._slots

    def start(self, job: TrialJob) -> None:
        self._trainers[job.key] = Trainer(self.data, job.model, job.train, threads=1)
        self._due.append(job.key)

    def proceed(self, key: int) -> None:
        self._due.append(key)

    def release(self, key: int) -> None:
        self._trainers.pop(key, None)

    def weights(self, key: int) -> dict[str, torch.Tensor] | None:
        return self._trainers[key].weights()

    def wait(self, timeout: float) -> list[Event]:
        if not self._due:
            return []
        key = self._due.popleft()
        try:
            return [EpochDone(key, self._trainers[key].run_epoch())]
        except Exception as exc:  # a trial's error is its result, not the sweep's crash
            return [TrialCrashed(key, f"{type(exc).__name__}: {exc}")]

    def close(self) -> None:
        self._trainers.clear()
        self._due.clear()


def run_to_completion(
    executor: TrialExecutor, jobs: list[TrialJob], timeout: float = 0.5
) -> dict[int, list[EpochMetrics] | str]:
    """Train every job for all its epochs (no pruning), as many at once as the executor holds.

    Returns each job's curve, or the reason it failed (a crash, or a loss that diverged)."""
    waiting = list(jobs)
    results: dict[int, list[EpochMetrics] | str] = {}
    curves: dict[int, list[EpochMetrics]] = {}
    epochs = {job.key: job.train.epochs for job in jobs}
    while waiting or curves:
        while waiting and len(curves) < executor.slots:
            job = waiting.pop(0)
            curves[job.key] = []
            executor.start(job)
        for event in executor.wait(timeout):
            if isinstance(event, WorkerLost):
                curves[event.key] = []  # restarted from its first epoch
                continue
            if isinstance(event, TrialCrashed):
                results[event.key] = event.reason
            elif event.metrics.diverged:
                results[event.key] = "diverged"
                executor.release(event.key)
            else:
                curves[event.key].append(event.metrics)
                if event.metrics.epoch < epochs[event.key]:
                    executor.proceed(event.key)
                    continue
                results[event.key] = curves[event.key]
                executor.release(event.key)
            curves.pop(event.key, None)
    return results
