"""Trials on Ray: a pool of actors, each training one trial at a time, one epoch per call.

The data set is put in Ray's object store once; every actor receives the same object (NumPy
arrays are read zero-copy from shared memory on each node). Workers never wait for the
driver's decision: two calls are always asked of a trial's worker, one under way and one
queued, so when an epoch's metrics arrive the worker is already on the next, and the decision
costs nothing; a "stop" (a pruned or failed trial) stops the epoch under way between two
mini-batches and drops it. A call trains the epochs up to the next one the driver decides on
(`TrialJob.decisions`: its pruner's rungs), as many as take about `CALL_SECONDS`, so short
epochs do not each pay a round trip; a call never passes the epoch after the next decision.

Every Ray error is a trial's fate, never the driver's. A worker process that dies (killed, out
of memory, node lost) or any other Ray failure restarts the trial on a fresh actor from its
first epoch, up to `max_retries` times; an error raised by the trial's own code fails it, and
its worker, which may be left broken (a CUDA error), is replaced. An epoch that runs far past
its limit (`watchdog`) fails the trial as a timeout and its worker is killed and replaced.
Where the actors come from (started now, or warm from the local cluster) is `actors`' job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

from caviar.cluster.actors import FreshActors, WarmActors
from caviar.cluster.running import RunningTrial
from caviar.cluster.runtime import AUTH_HINT, TrialResources
from caviar.cluster.tasks import run_tasks
from caviar.cluster.watchdog import EpochWatch
from caviar.cluster.worker import CONCURRENCY_GROUPS, TrialWorker
from caviar.models.data import Dataset
from caviar.models.executor import EpochDone, Event, TrialCrashed, TrialJob, Weights, WorkerLost

Result = TypeVar("Result")
CALL_SECONDS = 0.5  # a call trains about this long: the driver hears of epochs this often
CALL_MARGIN = 20  # at the last epoch's pace, a call takes this much less than the watchdog allows


class RayExecutor:
    """`TrialExecutor` on a Ray cluster (see `caviar.models.executor`)."""

    def __init__(self, data: Dataset | None, resources: TrialResources, slots: int,
                 max_retries: int = 2, warm: bool = False,
                 epoch_timeout: float | None = None) -> None:  # fmt: skip
        """Without `data`, the workers start now and get it from `load`. `warm`: lease warm
        workers of the local cluster (CPU trials only) instead of starting new ones.
        `epoch_timeout`: seconds an epoch may take (default: from the trial's own epochs)."""
        self.max_retries = max_retries
        self._watch = EpochWatch(epoch_timeout)
        self.epoch_timeout = epoch_timeout
        self._slots = slots
        self._data_ref: ray.ObjectRef | None = None
        remote: Any = ray.remote  # its typed overloads do not know `concurrency_groups`
        actor_class = remote(concurrency_groups=CONCURRENCY_GROUPS)(TrialWorker)
        source = WarmActors if warm and resources.gpus == 0 else FreshActors
        self._actors = source(actor_class, resources)
        self._running: dict[int, RunningTrial] = {}
        self._futures: dict[ray.ObjectRef, int] = {}
        self._dropped: dict[ray.ObjectRef, Any] = {}  # epochs of released trials -> their actor
        # Workers start now, while the driver prepares: torch takes them seconds to import.
        self._idle: list[Any] = self._actors.take(slots)
        if data is not None:
            self.load(data)

    def load(self, data: Dataset) -> None:
        """The trials' data: put in the object store once, handed to each worker."""
        self._data_ref = ray.put(data)
        for actor in self._idle:
            actor.use.remote(self._data_ref)

    @property
    def slots(self) -> int:
        return self._slots

    def start(self, job: TrialJob) -> None:
        running = RunningTrial(job, self.borrow())
        self._running[job.key] = running
        self._begin(running)

    def proceed(self, key: int) -> None:
        running = self._running.get(key)
        if running is None:  # it failed in the same wait that brought this epoch
            return
        running.answered += 1
        self._ask(running)

    def release(self, key: int) -> None:
        running = self._running.pop(key, None)
        self._watch.forget(key)
        if running is None:
            return
        if running.ahead:  # stop the epochs it was asked for ahead, and drop them
            running.actor.stop.remote(key)
        for ref in running.ahead:
            del self._futures[ref]
        # Its next trial queues behind what it finishes, and replaces its trainer.
        self.give_back(running.actor, running.ahead)

    def _fail(self, key: int, reason: str) -> TrialCrashed:
        """End trial `key` and replace its worker, which may be broken or stuck."""
        running = self._running.pop(key)
        self._watch.forget(key)
        for ref in running.ahead:
            self._futures.pop(ref, None)
        self.discard(running.actor)
        return TrialCrashed(key, reason)

    def weights(self, key: int) -> Weights | None:
        try:
            return dict(ray.get(self._running[key].actor.weights.remote()))
        except RayError:  # the worker died (or failed) after its last epoch
            return None

    def worker_pid(self, key: int) -> int:  # the process training `key`, for fault tests
        return int(ray.get(self._running[key].actor.pid.remote()))

    def wait(self, timeout: float) -> list[Event]:
        self._actors.renew()
        self._reap_dropped()
        if not self._futures:
            return []
        ready = ready_refs(
            list(self._futures), min(timeout, self._watch.seconds_to_next_deadline())
        )
        # A worker's death fails all its epochs at once; the first restarts the trial and the
        # others are no longer awaited.
        events = [e for ref in ready if ref in self._futures for e in self._collect(ref)]
        # Epochs of a worker that died in this same wait are not reported: the driver's word
        # on them would count for the new worker, which trains them again.
        restarted = {e.key for e in events if isinstance(e, WorkerLost)}
        events = [e for e in events if not (isinstance(e, EpochDone) and e.key in restarted)]
        late = [o for o in self._watch.overdue() if self._running[o.key].ahead]
        return events + [self._fail(o.key, o.reason) for o in late]

    def _reap_dropped(self) -> None:
        """Forget dropped epochs that ended; an actor that died meanwhile leaves the pool."""
        if not self._dropped:
            return
        done, _ = ray.wait(list(self._dropped), num_returns=len(self._dropped), timeout=0)
        for ref in done:
            actor = self._dropped.pop(ref)
            try:
                ray.get(ref)
            except RayError:
                if actor in self._idle:
                    self._idle.remove(actor)
                self.discard(actor)

    def run_tasks(self, task: Callable[..., Result], calls: list[tuple[Any, ...]]) -> list[Result]:
        return run_tasks(self, task, calls)

    def close(self) -> None:
        for key, running in self._running.items():
            if running.ahead:
                running.actor.stop.remote(key)
        self._actors.close(self._idle + [r.actor for r in self._running.values()])
        self._idle.clear()
        self._running.clear()
        self._futures.clear()

    def packed(self, size: int) -> Any:
        from caviar.cluster.packing import PackedExecutor  # it builds on this class

        return PackedExecutor(self, size)

    def borrow(self) -> Any:
        """An idle worker (a new one if none is idle), for a trial, a task or a pack."""
        if self._idle:
            return self._idle.pop()
        (actor,) = self._actors.take(1)
        if self._data_ref is not None:
            actor.use.remote(self._data_ref)
        return actor

    def give_back(self, actor: Any, running: Iterable[ray.ObjectRef] = ()) -> None:
        """`actor` is free; what it still `running` finishes before its next call (and is
        reaped like a dropped epoch: a worker that died meanwhile leaves the pool)."""
        self._dropped.update(dict.fromkeys(running, actor))
        self._idle.append(actor)

    def discard(self, actor: Any) -> None:  # a worker that died or may be broken: replaced
        self._actors.discard(actor)

    def _begin(self, running: RunningTrial) -> None:
        """The trial (again) from its first epoch."""
        running.restart()
        self._watch.began(running.job.key)
        self._ask(running)

    def _ask(self, running: RunningTrial) -> None:
        """Calls for the trial's next epochs, each of about `CALL_SECONDS` (well within the
        watchdog's limit), until two are asked or the limit is reached."""
        longest = min(CALL_SECONDS, self._watch.limit(running.job.key) / CALL_MARGIN)
        self._futures.update(dict.fromkeys(running.ask(longest), running.job.key))

    def _collect(self, ref: ray.ObjectRef) -> list[Event]:
        key = self._futures.pop(ref)
        running = self._running[key]
        running.ahead.remove(ref)
        try:
            trained = ray.get(ref)
        except RayTaskError as exc:  # the trial's own error (bad config, CUDA OOM, ...)
            cause = exc.cause if exc.cause is not None else exc
            return [self._fail(key, f"{type(cause).__name__}: {cause}")]
        except RayError as exc:  # the worker died, its node was lost, ...: run it again
            return [self._retry(key, exc)]
        trained = trained or []  # None: stopped, which only a released trial is
        for metrics in trained:
            self._watch.epoch_ended(key, metrics.seconds)
        return running.returned(trained)

    def _retry(self, key: int, error: Exception) -> Event:
        running, reason = self._running[key], _first_line(error)
        if running.attempt >= self.max_retries:
            hint = "" if running.epochs else f" (never trained an epoch. {AUTH_HINT})"
            return self._fail(key, f"worker died {running.attempt + 1} times: {reason}{hint}")
        self.discard(running.actor)
        for ref in running.ahead:  # the other epochs asked of the dead worker
            self._futures.pop(ref, None)
        running.attempt += 1
        running.actor = self.borrow()
        self._begin(running)
        return WorkerLost(key, running.attempt, reason)


def ready_refs(refs: list[ray.ObjectRef], timeout: float) -> list[ray.ObjectRef]:
    """All of `refs` that are done once the first is (waiting up to `timeout` seconds)."""
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    if ready:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    return ready


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
