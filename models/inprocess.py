"""Trials in this process, one epoch per `wait` call: the executor of fast tests, so search
logic, pruning and the champion run without starting Ray."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from caviar.models.data import Dataset
from caviar.models.executor import EpochDone, Event, TrialCrashed, TrialJob, Weights
from caviar.models.train import Trainer

Result = TypeVar("Result")


class InProcessExecutor:
    """`TrialExecutor` in this process: trials take turns, in the order they were asked."""

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

    def weights(self, key: int) -> Weights | None:
        return self._trainers[key].weights()

    def wait(self, timeout: float) -> list[Event]:
        if not self._due:
            return []
        key = self._due.popleft()
        try:
            return [EpochDone(key, self._trainers[key].run_epoch())]
        except Exception as exc:  # a trial's error is its result, not the sweep's crash
            return [TrialCrashed(key, f"{type(exc).__name__}: {exc}")]

    def run_tasks(self, task: Callable[..., Result], calls: list[tuple[Any, ...]]) -> list[Result]:
        return [task(self.data, *args) for args in calls]

    def packed(self, size: int) -> None:
        return None  # packs train on Ray workers (`caviar.cluster.packing`)

    def close(self) -> None:
        self._trainers.clear()
        self._due.clear()
