"""Trials on Ray: a pool of actors, each training one trial at a time, one epoch per call.

The data set is put in Ray's object store once; every actor receives the same object (NumPy
arrays are read zero-copy from shared memory on each node). After each epoch the actor returns
its metrics and waits: the driver decides whether it trains another epoch.

A worker process that dies (killed, out of memory, node lost) surfaces as `RayActorError`;
the trial is restarted on a fresh actor from its first epoch, up to `max_retries` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from caviar.cluster.runtime import AUTH_HINT, TrialResources
from caviar.cluster.worker import TrialWorker
from caviar.models.data import Dataset
from caviar.models.executor import EpochDone, Event, TrialCrashed, TrialJob, Weights, WorkerLost


@dataclass
class _Running:
    job: TrialJob
    actor: Any  # a TrialWorker actor handle
    attempt: int = 0
    epochs: int = 0  # epochs this trial's workers returned, over all attempts


class RayExecutor:
    """`TrialExecutor` on a Ray cluster (see `caviar.models.executor`)."""

    def __init__(
        self, data: Dataset, resources: TrialResources, slots: int, max_retries: int = 2
    ) -> None:
        self.resources = resources
        self.max_retries = max_retries
        self._slots = slots
        self._data_ref = ray.put(data)
        self._actor_class = ray.remote(TrialWorker).options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=0
        )
        self._idle: list[Any] = []
        self._running: dict[int, _Running] = {}
        self._futures: dict[ray.ObjectRef, int] = {}

    @property
    def slots(self) -> int:
        return self._slots

    def start(self, job: TrialJob) -> None:
        actor = self._idle.pop() if self._idle else self._new_actor()
        self._running[job.key] = _Running(job, actor)
        self._submit(job.key, actor.begin.remote(job.model, job.train))

    def proceed(self, key: int) -> None:
        self._submit(key, self._running[key].actor.next_epoch.remote())

    def release(self, key: int) -> None:
        running = self._running.pop(key, None)
        if running is not None:
            running.actor.end.remote()
            self._idle.append(running.actor)

    def weights(self, key: int) -> Weights | None:
        try:
            return dict(ray.get(self._running[key].actor.weights.remote()))
        except RayActorError:  # the worker died after its last epoch
            return None

    def worker_pid(self, key: int) -> int:
        """Process id of the worker training `key` (for operators and fault tests)."""
        return int(ray.get(self._running[key].actor.pid.remote()))

    def wait(self, timeout: float) -> list[Event]:
        if not self._futures:
            return []
        ready, _ = ray.wait(list(self._futures), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._futures), num_returns=len(self._futures), timeout=0)
        return [self._collect(ref) for ref in ready]

    def close(self) -> None:
        for actor in self._idle + [r.actor for r in self._running.values()]:
            ray.kill(actor)
        self._idle.clear()
        self._running.clear()
        self._futures.clear()

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._data_ref, self.resources.threads)

    def _submit(self, key: int, ref: ray.ObjectRef) -> None:
        self._futures[ref] = key

    def _collect(self, ref: ray.ObjectRef) -> Event:
        key = self._futures.pop(ref)
        try:
            done = EpochDone(key, ray.get(ref))
            self._running[key].epochs += 1
            return done
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
        self._submit(key, running.actor.begin.remote(running.job.model, running.job.train))
        return WorkerLost(key, running.attempt, reason)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
