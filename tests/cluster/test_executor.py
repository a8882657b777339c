"""Trials on a real local Ray instance: epochs on command, worker deaths retried."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from caviar.cluster.executor import RayExecutor
from caviar.cluster.runtime import TrialResources, concurrent_slots
from caviar.models.config import MlpConfig, TrainConfig
from caviar.models.data import build_dataset
from caviar.models.errors import CaviarError
from caviar.models.executor import EpochDone, TrialCrashed, TrialJob, WorkerLost, run_to_completion
from caviar.models.inprocess import InProcessExecutor
from caviar.models.sources import DigitsSource

pytestmark = pytest.mark.usefixtures("ray_instance")

JOB = TrialJob(1, MlpConfig(hidden_units=16, layers=1), TrainConfig(epochs=3, lr=0.05))


@pytest.fixture(scope="module")
def data():
    return build_dataset(DigitsSource(source="digits"))


def events_until(executor, predicate, limit=60.0):
    seen, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        for event in executor.wait(timeout=1.0):
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError(f"no matching event within {limit}s; saw {seen}")


def all_events_until(executor, predicate, limit=60.0):
    """Every event up to the `wait` that brought one matching `predicate`, and that wait's."""
    seen, deadline = [], time.monotonic() + limit
    while not any(predicate(e) for e in seen):
        assert time.monotonic() < deadline, f"no matching event within {limit}s; saw {seen}"
        seen += executor.wait(timeout=1.0)
    return seen


def test_the_worker_trains_the_next_epoch_while_the_driver_decides(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=2)
    try:
        executor.start(JOB)
        epochs: list[int] = []
        while len(epochs) < 3:  # two epochs come without a word: the worker went ahead
            for event in all_events_until(executor, lambda e: isinstance(e, EpochDone)):
                epochs.append(event.metrics.epoch)
                if event.metrics.epoch < 3:
                    executor.proceed(JOB.key)  # "go on" costs nothing: the epoch is under way
        assert epochs == [1, 2, 3]
        assert executor.wait(timeout=1.0) == [], "nothing beyond the trial's epochs"
        assert executor.weights(JOB.key), "a finished trial's weights are its last epoch's"
        executor.release(JOB.key)
    finally:
        executor.close()


def test_releasing_a_trial_stops_the_epoch_it_started_ahead(data):
    slow = TrialJob(5, MlpConfig(hidden_units=512, layers=3), TrainConfig(epochs=50, batch_size=8))
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    try:
        executor.start(slow)
        first = events_until(executor, lambda e: isinstance(e, EpochDone))[-1]
        executor.release(slow.key)  # pruned while its second epoch runs
        started = time.monotonic()
        executor.start(JOB)  # the same worker, once the dropped epoch has stopped
        (event,) = events_until(executor, lambda e: isinstance(e, EpochDone))
        assert event.key == JOB.key, "no event of the released trial arrives"
        assert time.monotonic() - started < 0.75 * first.metrics.seconds + 0.5
    finally:
        executor.close()


def test_epochs_between_decisions_come_back_together_and_in_order(data, monkeypatch):
    """Its pruner decides only at epoch 8: the worker trains the epochs before it back to back,
    several per call, and the driver still hears of every one, in order."""
    monkeypatch.setattr("caviar.cluster.executor.CALL_SECONDS", 3.0)  # calls of 2 epochs or more
    job = TrialJob(3, JOB.model, JOB.train.model_copy(update={"epochs": 10}), decisions=(8,))
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    try:
        executor.start(job)
        batches: list[list[int]] = []
        deadline = time.monotonic() + 60
        while not batches or batches[-1][-1] < 10:
            assert time.monotonic() < deadline, f"epochs so far: {batches}"
            epochs = [e.metrics.epoch for e in executor.wait(timeout=5.0)]
            batches += [epochs] if epochs else []
            for _ in (e for e in epochs if e < 10):
                executor.proceed(job.key)
        assert [e for batch in batches for e in batch] == list(range(1, 11))
        assert max(len(batch) for batch in batches) > 2, "several epochs per call"
    finally:
        executor.close()


def test_a_trial_stopped_at_a_decision_drops_the_epochs_trained_past_it(data, monkeypatch):
    monkeypatch.setattr("caviar.cluster.executor.CALL_SECONDS", 3.0)  # longer than a stop takes
    job = TrialJob(4, JOB.model, JOB.train.model_copy(update={"epochs": 400}), decisions=(2,))
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    try:
        executor.start(job)
        seen = all_events_until(executor, lambda e: e.metrics.epoch == 1)
        executor.proceed(job.key)  # after epoch 1: the worker trains on past 2 while 2 is decided
        if len(seen) == 1:
            seen += all_events_until(executor, lambda e: e.metrics.epoch == 2)
        assert [e.metrics.epoch for e in seen] == [1, 2]
        past = list(executor._running[job.key].ahead)
        executor.release(job.key)  # pruned at epoch 2
        assert past and ray.get(past) == [None] * len(past), "stopped, not trained on"
    finally:
        executor.close()


LONG = TrialJob(7, MlpConfig(hidden_units=256, layers=3), TrainConfig(epochs=40, batch_size=8))


@pytest.mark.chaos
def test_a_killed_worker_is_replaced_and_the_trial_restarts(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1, max_retries=1)
    try:
        executor.start(LONG)
        events_until(executor, lambda e: isinstance(e, EpochDone))
        os.kill(executor.worker_pid(LONG.key), signal.SIGKILL)  # while it trains ahead
        lost = events_until(executor, lambda e: isinstance(e, WorkerLost))[-1]
        assert lost.attempt == 1
        restarted = events_until(executor, lambda e: isinstance(e, EpochDone))[-1]
        assert restarted.metrics.epoch == 1, "the new worker starts the trial from its first epoch"
        # Out of retries: the next death ends the trial as failed, with the reason.
        os.kill(executor.worker_pid(LONG.key), signal.SIGKILL)
        crashed = events_until(executor, lambda e: isinstance(e, TrialCrashed))[-1]
        assert "worker died 2 times" in crashed.reason
    finally:
        executor.close()


def test_a_training_error_fails_the_trial_without_retry(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    bad = TrialJob(2, JOB.model, JOB.train.model_copy(update={"device": "cuda:7"}))
    try:
        executor.start(bad)
        crashed = events_until(executor, lambda e: isinstance(e, TrialCrashed))[-1]
        assert "CaviarError" in crashed.reason or "cuda" in crashed.reason
    finally:
        executor.close()


def test_slots_fit_the_cluster():
    assert concurrent_slots(8, TrialResources(cpus=1)) == 2
    assert concurrent_slots(1, TrialResources(cpus=1)) == 1
    with pytest.raises(CaviarError, match=r"gpus_per_trial is 0\.5 but the Ray cluster has 0 GPUs"):
        concurrent_slots(2, TrialResources(cpus=1, gpus=0.5))


def test_packed_runs_train_on_the_workers_each_with_its_own_result(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=2)
    try:
        jobs = [TrialJob(k, JOB.model, JOB.train.model_copy(update={"seed": k})) for k in range(6)]
        packed = run_to_completion(executor, jobs, keep_weights=True, pack=4)
    finally:
        executor.close()
    alone = run_to_completion(InProcessExecutor(data), jobs)
    assert sorted(packed) == list(range(6))
    for key, result in packed.items():
        assert [m.epoch for m in result.curve] == [1, 2, 3]
        assert result.weights is not None
        expected = alone[key].curve[-1].val_loss
        assert result.curve[-1].val_loss == pytest.approx(expected, abs=1e-5)


@pytest.mark.chaos
def test_a_hung_worker_fails_its_trial_as_a_timeout_and_is_replaced(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1, epoch_timeout=2.0)
    try:
        executor.start(LONG)
        events_until(executor, lambda e: isinstance(e, EpochDone))
        hung = executor.worker_pid(LONG.key)
        os.kill(hung, signal.SIGSTOP)  # it stops answering, mid-epoch
        started = time.monotonic()
        timed_out = events_until(executor, lambda e: isinstance(e, TrialCrashed))[-1]
        assert timed_out.key == LONG.key and timed_out.reason.startswith("timeout: epoch")
        assert time.monotonic() - started < 10
        executor.start(JOB)  # the sweep goes on, on a new worker
        assert executor.worker_pid(JOB.key) != hung
        assert events_until(executor, lambda e: isinstance(e, EpochDone))[-1].key == JOB.key
    finally:
        executor.close()


@pytest.mark.chaos
def test_a_worker_whose_trial_raised_is_replaced(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    try:
        executor.start(JOB)
        first = executor.worker_pid(JOB.key)
        executor.release(JOB.key)
        bad = TrialJob(2, JOB.model, JOB.train.model_copy(update={"device": "cuda:7"}))
        executor.start(bad)  # on the same worker, the only one
        events_until(executor, lambda e: isinstance(e, TrialCrashed))
        executor.start(TrialJob(3, JOB.model, JOB.train))
        assert executor.worker_pid(3) != first, "a worker left by an error is not reused"
    finally:
        executor.close()


@pytest.mark.chaos
def test_any_ray_error_is_the_trials_not_the_drivers(data):
    import ray

    executor = RayExecutor(data, TrialResources(cpus=1), slots=1, max_retries=1)
    try:
        executor.start(LONG)
        events_until(executor, lambda e: isinstance(e, EpochDone))
        # A Ray failure that is neither the actor's death nor the trial's own error.
        ray.cancel(executor._running[LONG.key].ahead[-1])
        lost = events_until(executor, lambda e: isinstance(e, WorkerLost | TrialCrashed))[-1]
        assert isinstance(lost, WorkerLost), "run again on a fresh worker"
        assert events_until(executor, lambda e: isinstance(e, EpochDone))[-1].metrics.epoch == 1
    finally:
        executor.close()
