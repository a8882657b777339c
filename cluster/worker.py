"""The Ray actor body that trains trials: holds the data and the trial being trained.

It runs on two threads: training calls (`begin`, `train_epochs`, the packs' `begin_pack` and
`next_epoch`, `weights`, `end`) and tasks (`run_task`) run in order on one, and `stop`
runs on the other (its own concurrency group), so the driver can stop epochs the worker started
ahead of time (see `executor`) between two mini-batches.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray

from caviar.cluster.reaper import holder_gone
from caviar.models.collector import pause_collector
from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.executor import Weights
from caviar.models.metrics import EpochMetrics

if TYPE_CHECKING:
    from caviar.models.packed import PackedTrainer
    from caviar.models.train import Trainer

CONCURRENCY_GROUPS = {"control": 1}


class TrialWorker:
    """One trial at a time, one epoch per call; the driver decides whether there is another."""

    def __init__(self, threads: int) -> None:
        # torch loads now, while the driver still prepares: the first trial finds it loaded.
        # The garbage collector's passes would walk its objects again and again meanwhile.
        loaded = pause_collector()
        try:
            import torch

            import caviar.models.train  # noqa: F401
        finally:
            loaded()
        torch.set_num_threads(max(1, threads))  # tasks (a packed run) too, not only trials

        self.data: Dataset | None = None  # the sweep's data, given by `use`
        self.threads = threads
        self.trainer: Trainer | PackedTrainer | None = None
        self._key: int | None = None  # the trial being trained
        self._stop = threading.Event()
        self._switch = threading.Lock()  # a `stop` never lands on the trial begun meanwhile
        self._join_error: Exception | None = None  # a pack member that could not be added
        self._leaves: deque[tuple[int, int]] = deque()  # (pack, trial) to remove at the next epoch
        self._final: dict[int, Weights] = {}  # weights of pack members that trained to the end
        self._owner: str | None = None  # the executor using this worker (a warm pool's lease)
        self._lease_until = 0.0

    def use(self, data: Dataset) -> None:
        """Train on `data` from now on (Ray hands the object store's copy, read-only)."""
        self.data = data

    def begin(self, key: int, model: ModelConfig, train: TrainConfig,
              count: int) -> list[EpochMetrics] | None:  # fmt: skip
        """Build trial `key`'s network and train its first `count` epochs (`train_epochs`)."""
        from caviar.models.train import Trainer  # torch loads here, in the worker, not the driver

        assert self.data is not None, "use() the data first"
        self._switch_to(key)
        self.trainer = Trainer(self.data, model, train, threads=self.threads)
        return self.train_epochs(count)

    def train_epochs(self, count: int) -> list[EpochMetrics] | None:
        """The trial's next `count` epochs, back to back, and their metrics (ending early at
        one that diverged: the trial is over); None when it was stopped meanwhile."""
        trained: list[EpochMetrics] = []
        while len(trained) < count:
            metrics = self._epoch()
            if metrics is None:
                return None
            trained.append(metrics)
            if metrics.diverged:
                break
        return trained

    def begin_pack(self, key: int, model: ModelConfig,
                   trains: dict[int, TrainConfig]) -> dict[int, EpochMetrics] | None:  # fmt: skip
        """Train `trains` as one pack (`key` names the pack); trials `join` and `leave` it
        between two epochs. Each epoch's metrics come by member."""
        from caviar.models.packed import PackedTrainer

        assert self.data is not None, "use() the data first"
        self._switch_to(key)
        self._final.clear()
        self._leaves.clear()
        self._join_error = None
        self.trainer = PackedTrainer(self.data, model, trains, threads=self.threads)
        return self._pack_epoch()

    def next_epoch(self) -> dict[int, EpochMetrics] | None:
        """The pack's next epoch: its metrics by member; None when it was stopped before it
        finished."""
        return self._pack_epoch()

    def join(self, key: int, train: TrainConfig) -> None:
        """Trial `key` joins the pack, after the epochs asked for before (calls run in order)."""
        assert self._pack is not None, "begin a pack first"
        try:
            self._pack.add(key, train)
        except Exception as exc:  # the pack may be half changed: its next epoch fails it
            self._join_error = exc

    @ray.method(concurrency_group="control")
    def leave(self, pack: int, key: int) -> None:
        """Trial `key` leaves the pack `pack` at its next epoch (its kept weights go too)."""
        with self._switch:  # not between an epoch's check for it and keeping the weights
            self._final.pop(key, None)
            self._leaves.append((pack, key))

    @ray.method(concurrency_group="control")
    def member_weights(self, key: int) -> Weights | None:
        """A pack member's weights after its last epoch (None if it did not train to it)."""
        return self._final.get(key)

    @ray.method(concurrency_group="control")
    def stop(self, key: int) -> None:
        """Stop trial `key`'s epoch in progress (or next); a later trial is not affected."""
        with self._switch:
            if self._key == key:
                self._stop.set()

    def weights(self) -> Weights:
        from caviar.models.train import Trainer

        assert isinstance(self.trainer, Trainer), "begin a trial first"
        return self.trainer.weights()

    def run_task(self, task: Callable[..., Any], *args: Any) -> Any:
        return task(self.data, *args)

    def end(self) -> None:
        self.trainer = None
        self._key = None
        self._final.clear()

    @property
    def _pack(self) -> PackedTrainer | None:
        from caviar.models.packed import PackedTrainer

        return self.trainer if isinstance(self.trainer, PackedTrainer) else None

    def _pack_epoch(self) -> dict[int, EpochMetrics] | None:
        """Members leave and join, then the pack trains an epoch; a member that diverged or
        trained its last epoch leaves at once (its final weights kept for `member_weights`)."""
        pack = self._pack
        assert pack is not None, "begin a pack first"
        if self._join_error is not None:
            raise self._join_error
        while self._leaves:
            left, key = self._leaves.popleft()
            if left == self._key and key in pack.keys:  # not a leave meant for an earlier pack
                pack.remove(key)
        if not pack.size:
            return {}
        metrics = self._epoch()
        for key, epoch in (metrics or {}).items():
            if epoch.diverged or epoch.epoch >= pack.configs[pack.keys.index(key)].epochs:
                with self._switch:  # kept unless it left while the epoch trained
                    if not epoch.diverged and (self._key, key) not in self._leaves:
                        self._final[key] = pack.weights(key)
                pack.remove(key)
        return metrics

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

    def _switch_to(self, key: int) -> None:
        with self._switch:
            self._key = key
            self._stop.clear()

    def _epoch(self) -> Any:
        from caviar.models.train import EpochAborted

        assert self.trainer is not None, "begin a trial first"
        try:
            return self.trainer.run_epoch(self._stop.is_set)
        except EpochAborted:
            return None
