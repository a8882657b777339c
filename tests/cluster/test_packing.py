"""Searched trials packed on Ray workers: trials join and leave a worker's pack between two
epochs, and each keeps the curve it would have trained alone."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from optuna.trial import TrialState

from caviar.cluster.executor import RayExecutor
from caviar.cluster.runtime import TrialResources
from caviar.models.config import MlpConfig, TrainConfig
from caviar.models.data import build_dataset
from caviar.models.executor import EpochDone, TrialJob, WorkerLost
from caviar.models.sources import DigitsSource
from caviar.models.train import Trainer
from tests.conftest import run_local_sweep

pytestmark = pytest.mark.usefixtures("ray_instance")

MODEL = MlpConfig(hidden_units=16, layers=1)


@pytest.fixture(scope="module")
def data():
    return build_dataset(DigitsSource(source="digits"))


def job(key: int, epochs: int, lr: float) -> TrialJob:
    return TrialJob(key, MODEL, TrainConfig(epochs=epochs, lr=lr, momentum=0.9, seed=key))


def lone_curve(data, trial: TrialJob, epochs: int) -> list[float]:
    trainer = Trainer(data, trial.model, trial.train, threads=1)
    return [trainer.run_epoch().val_loss for _ in range(epochs)]


def test_trials_join_and_leave_a_pack_and_each_keeps_its_lone_curve(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    packs = executor.packed(3)
    first, late, pruned = job(1, 5, 0.05), job(2, 3, 0.2), job(3, 4, 0.01)
    curves: dict[int, list] = {1: [], 2: [], 3: []}
    try:
        assert packs is not None and packs.slots == 3
        packs.start(first)
        deadline = time.monotonic() + 60
        while not curves[1]:  # the pack trains; two more trials join it later
            curves[1] += [e.metrics for e in packs.wait(1.0) if isinstance(e, EpochDone)]
            assert time.monotonic() < deadline
        packs.start(late)
        packs.start(pruned)
        assert not packs.fits(job(4, 3, 0.1)), "one worker, and its pack is full"
        while len(curves[1]) < 5 or len(curves[2]) < 3:
            for event in packs.wait(1.0):
                assert isinstance(event, EpochDone), event
                curves[event.key].append(event.metrics)
                if event.key == 3 and event.metrics.epoch == 1:
                    packs.release(3)  # pruned: it leaves, the others go on
            assert time.monotonic() < deadline
        finished = packs.weights(2)
    finally:
        for key in (1, 2, 3):
            packs.release(key)
    assert [m.epoch for m in curves[1]] == [1, 2, 3, 4, 5]
    assert [m.epoch for m in curves[2]] == [1, 2, 3], "a newcomer starts from its first epoch"
    assert [m.epoch for m in curves[3]] == [1], "nothing of a released trial comes back"
    for trial in (first, late):
        expected = lone_curve(data, trial, trial.train.epochs)
        assert [m.val_loss for m in curves[trial.key]] == pytest.approx(expected, abs=1e-5)
    alone = Trainer(data, late.model, late.train, threads=1)
    for _ in range(3):
        alone.run_epoch()
    assert finished is not None
    for name, value in alone.weights().items():
        np.testing.assert_allclose(finished[name], value, atol=1e-5, rtol=1e-4)
    # The worker is back in the pool: a lone trial runs on it as before.
    executor.start(job(5, 1, 0.05))
    try:
        deadline = time.monotonic() + 60
        while not [e for e in executor.wait(1.0) if isinstance(e, EpochDone)]:
            assert time.monotonic() < deadline
    finally:
        executor.close()


def test_a_stage_that_draws_shapes_per_pack_trains_packed_trials_with_their_lone_curves(
    tmp_path, data
):
    changes = {
        "space": {
            "lr": {"scale": "log", "low": 1.0e-3, "high": 0.3},
            "hidden_units": {"scale": "int", "low": 8, "high": 64, "log": True},
        },
        "stages": [
            {
                "name": "search",
                "trials": 12,
                "sampler": "random",
                "pruner": {"kind": "median", "startup_trials": 2, "warmup_epochs": 1},
                "shape_per_pack": True,
            }
        ],
        "parallel": {"trials": 2, "cpus_per_trial": 1, "pack": 4},
    }
    executor = RayExecutor(data, TrialResources(cpus=1), slots=2)
    try:
        sweep = run_local_sweep(tmp_path, changes, executor=executor)
    finally:
        executor.close()
    trials = sweep.study("search").trials
    assert len(trials) == 12
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    widths = [t.params["hidden_units"] for t in trials]
    assert len(set(widths)) <= 6, f"a pack's trials share their width: {widths}"
    assert sweep.best.value is not None and sweep.best.value > 0.8
    space = sweep.spec.search_space
    for trial in trials:  # every trial's curve is the one it trains alone (to float rounding)
        model, train = sweep.spec.configs(space.to_values(trial.params), epochs=4)
        alone = Trainer(data, model, train, threads=1)
        expected = [alone.run_epoch().val_accuracy for _ in range(len(trial.intermediate_values))]
        got = [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)]
        assert got == pytest.approx(expected, abs=1 / len(data.y_val) + 1e-6), trial.number


def test_a_pack_whose_worker_dies_starts_its_trials_again_on_a_new_worker(data):
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1, max_retries=1)
    packs = executor.packed(2)
    trials = [job(1, 6, 0.05), job(2, 6, 0.1)]
    curves: dict[int, list[int]] = {1: [], 2: []}
    lost: list[int] = []
    try:
        for trial in trials:
            packs.start(trial)
        deadline = time.monotonic() + 90
        while len(curves[1]) < 6 or len(curves[2]) < 6:
            for event in packs.wait(1.0):
                if isinstance(event, EpochDone):
                    curves[event.key].append(event.metrics.epoch)
                    if event.key == 1 and event.metrics.epoch == 2 and not lost:
                        os.kill(packs.worker_pid(1), signal.SIGKILL)
                else:
                    assert isinstance(event, WorkerLost), event
                    lost.append(event.key)
                    curves[event.key] = []  # restarted from its first epoch
            assert time.monotonic() < deadline
    finally:
        for trial in trials:
            packs.release(trial.key)
        executor.close()
    assert sorted(lost) == [1, 2], "both members of the pack start again"
    assert curves == {1: [1, 2, 3, 4, 5, 6], 2: [1, 2, 3, 4, 5, 6]}


def test_a_worker_that_dies_after_its_pack_dissolved_is_not_handed_the_next_trial(data):
    slow = TrialJob(5, MlpConfig(hidden_units=512, layers=3), TrainConfig(epochs=50, batch_size=8))
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    packs = executor.packed(2)
    try:
        packs.start(slow)
        deadline = time.monotonic() + 60
        while not any(isinstance(e, EpochDone) for e in packs.wait(1.0)):
            assert time.monotonic() < deadline
        pid = packs.worker_pid(slow.key)
        os.kill(pid, signal.SIGKILL)  # during the epochs the pack asked for ahead
        packs.release(slow.key)  # its last member, pruned before that death is seen
        while executor._dropped:  # those epochs fail with the worker: it leaves the pool
            packs.wait(0.2)
            assert time.monotonic() < deadline
        packs.start(job(6, 2, 0.05))
        while (events := packs.wait(1.0)) == []:
            assert time.monotonic() < deadline
        assert isinstance(events[0], EpochDone), "a fresh worker trains it: no loss, no retry"
        assert packs.worker_pid(6) != pid
    finally:
        executor.close()


def test_a_trial_that_joins_as_the_others_finish_still_trains(data):
    # Its join waits behind the two pack epochs asked for before it; in the second of them
    # the pack has nobody left to train, and the newcomer must not be taken for lost.
    executor = RayExecutor(data, TrialResources(cpus=1), slots=1)
    packs = executor.packed(2)
    first, newcomer = job(1, 2, 0.05), job(2, 2, 0.1)
    seen: list[tuple[int, int]] = []
    try:
        packs.start(first)
        deadline = time.monotonic() + 60
        while (2, 2) not in seen:
            for event in packs.wait(1.0):
                assert isinstance(event, EpochDone), event
                seen.append((event.key, event.metrics.epoch))
                if seen == [(1, 1)]:
                    packs.start(newcomer)
                if event.metrics.epoch == 2:
                    packs.release(event.key)
            assert time.monotonic() < deadline
    finally:
        executor.close()
    assert seen == [(1, 1), (1, 2), (2, 1), (2, 2)]
