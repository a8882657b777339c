"""The boundary between the driver, which decides, and whatever trains the trials.

The driver starts a trial, then after each reported epoch either lets it go on (`proceed`) or
ends it (`release`). Workers never decide; they train one epoch when told. This module holds
only the jobs, the events and the protocol (no torch, no training code), so the driver sees
configs and metrics and nothing else. Implementations: `caviar.cluster.executor.RayExecutor`
(production) and `caviar.models.inprocess.InProcessExecutor` (one process, for tests).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.metrics import EpochMetrics
from caviar.models.packs import group, train_pack

Weights = dict[str, Any]  # a network's state dict as NumPy arrays
Result = TypeVar("Result")


@dataclass(frozen=True)
class TrialJob:
    key: int
    model: ModelConfig
    train: TrainConfig
    # The epochs after which the driver may stop the trial (its pruner's rungs); after any
    # other epoch the driver always lets it go on, so its worker need not wait to hear it.
    # None: after every epoch. (): never before the last.
    decisions: tuple[int, ...] | None = None

    def next_decision(self, epoch: int) -> int:
        """The first epoch after `epoch` that the driver decides on (the last one at most)."""
        last = self.train.epochs
        if self.decisions is None:
            return min(epoch + 1, last)
        after = bisect_right(self.decisions, epoch)  # they are in order, one per epoch at most
        return min(last, self.decisions[after]) if after < len(self.decisions) else last


@dataclass(frozen=True)
class TrialEvent:
    """Something that happened to the trial `key`."""

    key: int


@dataclass(frozen=True)
class EpochDone(TrialEvent):
    """The trial finished an epoch and waits to be told whether to go on."""

    metrics: EpochMetrics


@dataclass(frozen=True)
class WorkerLost(TrialEvent):
    """The trial's worker died; the executor restarted the trial from its first epoch."""

    attempt: int
    reason: str


@dataclass(frozen=True)
class TrialCrashed(TrialEvent):
    """The trial cannot go on: an error in training, or its worker died too often."""

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
        """The trial goes on after its earliest epoch not yet answered (called once per
        epoch the driver lets it go on after, in order)."""

    def release(self, key: int) -> None:
        """The trial is over; free its worker."""

    def weights(self, key: int) -> Weights | None:
        """The trial's network weights, before it is released; None if its worker is gone."""
        ...

    def wait(self, timeout: float) -> list[Event]:
        """Events that arrived, waiting up to `timeout` seconds for the first one."""
        ...

    def run_tasks(self, task: Callable[..., Result], calls: list[tuple[Any, ...]]) -> list[Result]:
        """`task(data, *args)` for each `args` of `calls`, each on a worker of its own, as
        many at once as there are slots; waits for all; results in the order of `calls`."""
        ...

    def close(self) -> None:
        """Stop all workers."""

    def packed(self, size: int) -> PackedTrials | None:
        """The same workers training up to `size` same-shape trials at once each, as one
        batched model (`caviar.models.packed`); None where this executor cannot pack."""
        ...


class PackedTrials(TrialExecutor, Protocol):
    """A `TrialExecutor` whose workers each train a pack: trials join a pack of their shape
    between two epochs and leave it when released; `slots` counts seats, not workers."""

    def fits(self, job: TrialJob) -> bool:
        """Whether `job` can start now: a worker is free, or a pack of its shape has a seat."""
        ...

    def open_pack(self) -> int | None:
        """A trial in a pack with a free seat, when no worker is free (None otherwise): the
        next trial drawn in its shape fills the seat."""
        ...


@dataclass(frozen=True)
class Trained:
    """A job trained for all its epochs: its curve and its final weights (None if lost)."""

    curve: list[EpochMetrics]
    weights: Weights | None


def run_to_completion(
    executor: TrialExecutor, jobs: list[TrialJob], keep_weights: bool = False, pack: int = 1
) -> dict[int, Trained | str]:
    """Train every job for all its epochs (no pruning), as many at once as the executor holds;
    with `pack` > 1, same-shape jobs train in packs of up to `pack` (`caviar.models.packs`).

    Returns each job's result (with its weights if `keep_weights`), or the reason it failed
    (a crash, or a loss that diverged)."""
    results: dict[int, Trained | str] = {}
    waiting = list(jobs)
    if pack > 1:
        packs, waiting = group(waiting, pack, executor.slots)
        calls = [(p[0].model, {j.key: j.train for j in p}, keep_weights) for p in packs]
        for trained in executor.run_tasks(train_pack, calls) if calls else []:
            results.update(trained)
    curves: dict[int, list[EpochMetrics]] = {}
    epochs = {job.key: job.train.epochs for job in jobs}
    while waiting or curves:
        while waiting and len(curves) < executor.slots:
            job = waiting.pop(0)
            curves[job.key] = []
            executor.start(replace(job, decisions=()))  # nothing stops it before its end
        for event in executor.wait(timeout=0.5):
            outcome = _follow(executor, event, curves, epochs[event.key], keep_weights)
            if outcome is not None:
                results[event.key] = outcome
                curves.pop(event.key, None)
    return results


def _follow(
    executor: TrialExecutor,
    event: Event,
    curves: dict[int, list[EpochMetrics]],
    epochs: int,
    keep_weights: bool,
) -> Trained | str | None:
    """One event of `run_to_completion`: the job's result when it ended, else None."""
    if isinstance(event, WorkerLost):
        curves[event.key] = []  # restarted from its first epoch
        return None
    if isinstance(event, TrialCrashed):
        return event.reason
    if event.metrics.diverged:
        executor.release(event.key)
        return "diverged"
    curves[event.key].append(event.metrics)
    if event.metrics.epoch < epochs:
        executor.proceed(event.key)
        return None
    weights = executor.weights(event.key) if keep_weights else None
    executor.release(event.key)
    return Trained(curves[event.key], weights)
