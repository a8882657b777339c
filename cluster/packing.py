"""Searched trials packed on Ray workers: each worker trains a pack of same-shape trials as
one batched model (`caviar.models.packed`), and the driver still sees one trial at a time.

A trial joins a pack of its shape that has a free seat, or starts a new pack on a free
worker; it joins between two epochs and from its own first epoch, so its curve is the one it
would have alone. A pruned trial leaves between two epochs too; the others train on without
waiting for any decision (two pack epochs are always asked for: one under way, one queued).
A member that diverges or trains its last epoch leaves at once, on the worker, which keeps a
finished member's weights until it is released. A worker that dies restarts its pack's
unfinished members on a new worker; an error in the pack fails its members.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

from caviar.cluster.executor import RayExecutor, _first_line, ready_refs
from caviar.cluster.watchdog import EpochWatch
from caviar.models.executor import EpochDone, Event, TrialCrashed, TrialJob, Weights, WorkerLost
from caviar.models.packs import shape_of

Result = TypeVar("Result")
AHEAD = 2  # pack epochs asked for at once: the worker never waits for the driver
_PACK_IDS = itertools.count()  # unique in the driver: a warm worker serves stage after stage


@dataclass
class _Pack:
    id: int
    actor: Any  # a TrialWorker actor handle
    shape: tuple[str, ...]
    members: dict[int, TrialJob]  # trials in the pack, until released
    training: set[int]  # members the worker still trains (not finished, diverged or left)
    ahead: deque[ray.ObjectRef] = field(default_factory=deque)
    deaths: dict[int, int] = field(default_factory=dict)  # worker deaths each member lived


class PackedExecutor:
    """`PackedTrials` on a `RayExecutor`'s workers (see `caviar.models.executor`)."""

    def __init__(self, workers: RayExecutor, size: int) -> None:
        self.workers, self.size = workers, size
        self._packs: dict[int, _Pack] = {}
        self._of: dict[int, _Pack] = {}  # trial key -> its pack
        self._futures: dict[ray.ObjectRef, _Pack] = {}
        self._watch = EpochWatch(workers.epoch_timeout)

    @property
    def slots(self) -> int:
        return self.workers.slots * self.size

    def fits(self, job: TrialJob) -> bool:
        return len(self._packs) < self.workers.slots or self._seat(job) is not None

    def open_pack(self) -> int | None:
        if len(self._packs) < self.workers.slots:
            return None
        return next((min(p.members) for p in self._packs.values() if self._has_seat(p)), None)

    def start(self, job: TrialJob) -> None:
        pack = self._seat(job)
        if pack is None:
            pack = _Pack(next(_PACK_IDS), self.workers.borrow(), shape_of(job), {}, set())
            self._packs[pack.id] = pack
        pack.members[job.key] = job
        pack.training.add(job.key)
        self._of[job.key] = pack
        if len(pack.members) == 1:
            self._begin(pack)
        else:
            pack.actor.join.remote(job.key, job.train)
            self._top_up(pack)

    def proceed(self, key: int) -> None:
        pass  # the pack trains on while the trial is in it

    def release(self, key: int) -> None:
        pack = self._of.pop(key, None)
        if pack is None:
            return
        del pack.members[key]
        pack.training.discard(key)
        if pack.members:
            pack.actor.leave.remote(pack.id, key)
            return
        del self._packs[pack.id]  # its last member: the worker goes back to the pool
        self._watch.forget(pack.id)
        if pack.ahead:
            pack.actor.stop.remote(pack.id)
        running = list(pack.ahead)
        self._forget_ahead(pack)
        pack.actor.end.remote()
        self.workers.give_back(pack.actor, running)

    def weights(self, key: int) -> Weights | None:
        pack = self._of.get(key)  # gone: its pack failed in the same batch of events
        if pack is None:
            return None
        try:
            weights = ray.get(pack.actor.member_weights.remote(key))
        except RayError:  # the worker died after the trial's last epoch
            return None
        return dict(weights) if weights is not None else None

    def worker_pid(self, key: int) -> int:  # the process training `key`, for fault tests
        return int(ray.get(self._of[key].actor.pid.remote()))

    def wait(self, timeout: float) -> list[Event]:
        self.workers.wait(0)  # renews the warm workers' lease; its own trials: none here
        if not self._futures:
            return []
        ready = ready_refs(
            list(self._futures), min(timeout, self._watch.seconds_to_next_deadline())
        )
        events = [e for ref in ready if ref in self._futures for e in self._collect(ref)]
        for late in self._watch.overdue():
            if (pack := self._packs.get(late.key)) is not None and pack.ahead:
                events += self._fail(pack, late.reason)
        return events

    def run_tasks(self, task: Callable[..., Result], calls: list[tuple[Any, ...]]) -> list[Result]:
        return self.workers.run_tasks(task, calls)

    def packed(self, size: int) -> PackedExecutor:
        return self if size == self.size else PackedExecutor(self.workers, size)

    def close(self) -> None:
        for key in list(self._of):
            self.release(key)
        self.workers.close()

    def _seat(self, job: TrialJob) -> _Pack | None:
        shape = shape_of(job)
        return next((p for p in self._packs.values()
                     if p.shape == shape and self._has_seat(p)), None)  # fmt: skip

    def _has_seat(self, pack: _Pack) -> bool:
        return len(pack.members) < self.size

    def _begin(self, pack: _Pack) -> None:
        """The pack's first epoch, with the members it trains, on its worker."""
        jobs = [pack.members[k] for k in sorted(pack.training)]
        self._watch.began(pack.id)
        trains = {job.key: job.train for job in jobs}
        self._track(pack, pack.actor.begin_pack.remote(pack.id, jobs[0].model, trains))
        self._top_up(pack)

    def _top_up(self, pack: _Pack) -> None:
        while pack.training and len(pack.ahead) < AHEAD:
            self._track(pack, pack.actor.next_epoch.remote())

    def _track(self, pack: _Pack, ref: ray.ObjectRef) -> None:
        pack.ahead.append(ref)
        self._futures[ref] = pack

    def _forget_ahead(self, pack: _Pack) -> None:
        for ref in pack.ahead:
            self._futures.pop(ref, None)
        pack.ahead.clear()

    def _collect(self, ref: ray.ObjectRef) -> list[Event]:
        pack = self._futures.pop(ref)
        pack.ahead.remove(ref)
        try:
            metrics = ray.get(ref)
        except RayTaskError as exc:  # the pack's own error: its members fail
            cause = exc.cause if exc.cause is not None else exc
            return self._fail(pack, f"{type(cause).__name__}: {cause}")
        except RayError as exc:  # the worker died: its members start again elsewhere
            return self._retry(pack, exc)
        events: list[Event] = []
        for key, epoch in (metrics or {}).items():
            if key not in pack.members:  # released while the worker trained it ahead
                continue
            if epoch.diverged or epoch.epoch >= pack.members[key].train.epochs:
                pack.training.discard(key)
            events.append(EpochDone(key, epoch))
        if metrics:
            self._watch.epoch_ended(pack.id, sum(m.seconds for m in metrics.values()))
        self._top_up(pack)
        return events

    def _fail(self, pack: _Pack, reason: str) -> list[Event]:
        """End every member of `pack` and replace its worker, which may be broken or stuck."""
        del self._packs[pack.id]
        self._watch.forget(pack.id)
        self._forget_ahead(pack)
        self.workers.discard(pack.actor)
        for key in pack.members:
            self._of.pop(key, None)
        return [TrialCrashed(key, reason) for key in pack.members]

    def _retry(self, pack: _Pack, error: Exception) -> list[Event]:
        """The pack's worker died: its unfinished members start again on a new worker, each
        up to `max_retries` times (a member that joined later counts only what it lived)."""
        reason = _first_line(error)
        self.workers.discard(pack.actor)
        self._forget_ahead(pack)
        events: list[Event] = []
        for key in sorted(pack.training):
            pack.deaths[key] = died = pack.deaths.get(key, 0) + 1
            if died <= self.workers.max_retries:
                events.append(WorkerLost(key, died, reason))
                continue
            pack.training.discard(key)
            del pack.members[key]
            self._of.pop(key, None)
            events.append(TrialCrashed(key, f"worker died {died} times: {reason}"))
        if not pack.members:
            del self._packs[pack.id]
            self._watch.forget(pack.id)
            return events
        pack.actor = self.workers.borrow()
        if pack.training:
            self._begin(pack)
        return events
