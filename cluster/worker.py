"""The Ray actor body that trains trials: holds the data and the trial being trained.

It runs on two threads: training calls (`begin`, `next_epoch`, `weights`, `end`) and tasks
(`run_task`, `warm`) run in order on one, and `stop` runs on the other (its own concurrency
group), so the driver can stop an epoch the worker started ahead of time (see `executor`)
between two mini-batches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray

from caviar.cluster.reaper import holder_gone
from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.executor import Weights
from caviar.models.metrics import EpochMetrics

if TYPE_CHECKING:
    from caviar.models.train import Trainer

CONCURRENCY_GROUPS = {"control": 1}


class TrialWorker:
    """One trial at a time, one epoch per call; the driver decides whether there is another."""

    def __init__(self, threads: int) -> None:
        # torch loads now, while the driver still prepares: the first trial finds it loaded.
        import torch

        import caviar.models.train  # noqa: F401

        torch.set_num_threads(max(1, threads))  # tasks (a packed run) too, not only trials

        self.data: Dataset | None = None  # the sweep's data, given by `use`
        self.threads = threads
        self.trainer: Trainer | None = None
        self._key: int | None = None  # the trial being trained
        self._stop = threading.Event()
        self._warmed: set[str] = set()  # tasks `warm` ran here
        self._owner: str | None = None  # the executor using this worker (a warm pool's lease)
        self._lease_until = 0.0

    def use(self, data: Dataset) -> None:
        """Train on `data` from now on (Ray hands the object store's copy, read-only)."""
        self.data = data

    def begin(self, key: int, model: ModelConfig, train: TrainConfig) -> EpochMetrics | None:
        from caviar.models.train import Trainer  # torch loads here, in the worker, not the driver

        assert self.data is not None, "use() the data first"
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

    def run_task(self, task: Callable[..., Any], *args: Any) -> Any:
        return task(self.data, *args)

    def warm(self, task: Callable[[Dataset], None]) -> None:
        """Run `task` once in this process (imports, first-call compilation); a failure only
        means the real call later pays the cost, so it is logged, not raised."""
        name = f"{task.__module__}.{task.__qualname__}"
        if name in self._warmed or self.data is None:
            return
        self._warmed.add(name)
        try:
            task(self.data)
        except Exception:
            logging.getLogger(__name__).warning("warming up with %s failed", name, exc_info=True)

    def end(self) -> None:
        self.trainer = None
        self._key = None

    @ray.method(concurrency_group="control")
    def claim(self, owner: str, ttl: float) -> bool:
        """Lease this worker to `owner` for `ttl` seconds, if no one else holds it; a lease
        ends when released, when its holder stops renewing it (a driver killed elsewhere), or
        at once when its holder was a process on this machine that is gone."""
        now = time.monotonic()
        held = self._owner not in (None, owner) and now < self._lease_until
        if held and not holder_gone(self._owner):
            return False
        self._owner, self._lease_until = owner, now + ttl
        return True

    @ray.method(concurrency_group="control")
    def release(self, owner: str) -> None:
        """`owner` is done: forget its trial and data, and stay warm for the next."""
        if self._owner == owner:
            self._stop.set()
            self.trainer, self.data, self._key, self._owner = None, None, None, None

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        return os.getpid()

    def _epoch(self) -> EpochMetrics | None:
        from caviar.models.train import EpochAborted

        assert self.trainer is not None, "begin a trial first"
        try:
            return self.trainer.run_epoch(self._stop.is_set)
        except EpochAborted:
            return None
