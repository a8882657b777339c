"""Trials on Ray: a pool of actors, each training one trial at a time, one epoch per call.

The data set is put in Ray's object store once; every actor receives the same object (NumPy
arrays are read zero-copy from shared memory on each node). Workers never wait for the
driver's decision: when an epoch's metrics arrive, the next epoch is already asked for, and
the driver's "go on" costs nothing; its "stop" (a pruned or failed trial) stops that epoch
between two mini-batches and drops it.

A worker process that dies (killed, out of memory, node lost) surfaces as `RayActorError`;
the trial is restarted on a fresh actor from its first epoch, up to `max_retries` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from caviar.cluster.runtime import AUTH_HINT, TrialResources
from caviar.cluster.worker import CONCURRENCY_GROUPS, TrialWorker
from caviar.models.data import Dataset
from caviar.models.executor import EpochDone, Event, TrialCrashed, TrialJob, Weights, WorkerLost


@dataclass
class _Running:
    job: TrialJob
    actor: Any  # a TrialWorker actor handle
    attempt: int = 0
    epochs: int = 0  # epochs this trial's workers returned, over all attempts
    ahead: ray.ObjectRef | None = None  # the epoch being trained (asked for before the driver)


class RayExecutor:
    """`TrialExecutor` on a Ray cluster (see `caviar.models.executor`)."""

    def __init__(
        self, data: Dataset, resources: TrialResources, slots: int, max_retries: int = 2
    ) -> None:
        self.resources = resources
        self.max_retries = max_retries
        self._slots = slots
        self._data_ref = ray.put(data)
        remote: Any = ray.remote  # its typed overloads do not know `concurrency_groups`
        self._actor_class = remote(concurrency_groups=CONCURRENCY_GROUPS)(TrialWorker).options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=0
        )
        # Every slot's worker starts now, while the driver opens its studies and records: the
        # first trials find them up (a worker process takes seconds to import torch).
        self._idle: list[Any] = [self._new_actor() for _ in range(slots)]
        self._running: dict[int, _Running] = {}
        self._futures: dict[ray.ObjectRef, int] = {}
        self._dropped: dict[ray.ObjectRef, Any] = {}  # epochs of released trials -> their actor

    @property
    def slots(self) -> int:
        return self._slots

    def start(self, job: TrialJob) -> None:
        actor = self._idle.pop() if self._idle else self._new_actor()
        running = _Running(job, actor)
        self._running[job.key] = running
        self._submit(running, actor.begin.remote(job.key, job.model, job.train))

    def proceed(self, key: int) -> None:
        running = self._running[key]
        if running.ahead is None:  # else the worker is on it already
            self._submit(running, running.actor.next_epoch.remote())

    def release(self, key: int) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        if running.ahead is not None:  # stop the epoch it started ahead, and drop it
            running.actor.stop.remote(key)
            self._dropped[running.ahead] = running.actor
            del self._futures[running.ahead]
        running.actor.end.remote()
        self._idle.append(running.actor)  # its next trial queues behind what it finishes

    def weights(self, key: int) -> Weights | None:
        try:
            return dict(ray.get(self._running[key].actor.weights.remote()))
        except RayActorError:  # the worker died after its last epoch
            return None

    def worker_pid(self, key: int) -> int:
        """Process id of the worker training `key` (for operators and fault tests)."""
        return int(ray.get(self._running[key].actor.pid.remote()))

    def wait(self, timeout: float) -> list[Event]:
        self._reap_dropped()
        if not self._futures:
            return []
        ready, _ = ray.wait(list(self._futures), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._futures), num_returns=len(self._futures), timeout=0)
        return [self._collect(ref) for ref in ready]

    def _reap_dropped(self) -> None:
        """Forget dropped epochs that ended; an actor that died meanwhile leaves the pool."""
        if not self._dropped:
            return
        done, _ = ray.wait(list(self._dropped), num_returns=len(self._dropped), timeout=0)
        for ref in done:
            actor = self._dropped.pop(ref)
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError):
                if actor in self._idle:
                    self._idle.remove(actor)
                ray.kill(actor)

    def close(self) -> None:
        for actor in self._idle + [r.actor for r in self._running.values()]:
            ray.kill(actor)
        self._idle.clear()
        self._running.clear()
        self._futures.clear()

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._data_ref, self.resources.threads)

    def _submit(self, running: _Running, ref: ray.ObjectRef) -> None:
        running.ahead = ref
        self._futures[ref] = running.job.key

    def _collect(self, ref: ray.ObjectRef) -> Event:
        key = self._futures.pop(ref)
        running = self._running[key]
        running.ahead = None
        try:
            metrics = ray.get(ref)
            running.epochs += 1
            if metrics.epoch < running.job.train.epochs and not metrics.diverged:
                self._submit(running, running.actor.next_epoch.remote())  # train ahead
            return EpochDone(key, metrics)
        except RayActorError as exc:
            return self._retry(key, exc)
        except RayTaskError as exc:  # the trial's own error (bad config, CUDA OOM, ...)
            self.release(key)
            cause = exc.cause if exc.cause is not None else exc
            return TrialCrashed(key, f"{type(cause).__name__}: {cause}")

    def _retry(self, key: int, error: Exception) -> Event:
        running = self._running[key]
        ray.kill(running.actor)
        reason = _first_line(error)
        if running.attempt >= self.max_retries:
            del self._running[key]
            hint = "" if running.epochs else f" (never trained an epoch. {AUTH_HINT})"
            return TrialCrashed(key, f"worker died {running.attempt + 1} times: {reason}{hint}")
        running.attempt += 1
        running.actor = self._new_actor()
        job = running.job
        self._submit(running, running.actor.begin.remote(job.key, job.model, job.train))
        return WorkerLost(key, running.attempt, reason)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
