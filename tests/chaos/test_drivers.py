"""Drivers that die, and drivers that collide: a sweep's budget is spent exactly once, its
records are never duplicated, and two drivers never run one sweep."""

from __future__ import annotations

import copy
import os
import random
import signal
import time

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.chaos.support import SLOW, Command, counted, mlflow_runs, own, study
from tests.conftest import write_spec

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def trials_of(run_dir, stage, storage=None):
    try:
        return study(run_dir, "chaos", stage, storage).trials
    except (KeyError, FileNotFoundError, ValueError):
        return []


@pytest.fixture(params=["journal", "postgresql"])
def shared_storage(request, tmp_path):
    """A study storage two run directories share: a journal file, or PostgreSQL."""
    if request.param == "journal":
        return f"journal:///{tmp_path / 'shared' / 'optuna.journal'}"
    server = request.getfixturevalue("postgres")
    database = f"chaos_{random.randrange(10**9)}"
    server.run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "caviar", database)
    return server.url(database)


def test_a_second_driver_on_a_shared_storage_is_refused(tmp_path, shared_storage):
    spec = write_spec(tmp_path, SLOW)
    first = Command(tmp_path, "sweep", spec, "--run-dir", "runs-a", "--storage", shared_storage)
    try:
        first.until(lambda: any(t.state is TrialState.RUNNING
                                for t in trials_of(None, "search", shared_storage)))  # fmt: skip
        second = Command(
            tmp_path, "sweep", spec, "--run-dir", "runs-b", "--storage", shared_storage,
            log="second.log",
        )  # fmt: skip
        assert second.wait(timeout=60) == 2, second.output()
        assert "already running" in second.output() and "lease" in second.output()
        assert "Traceback" not in second.output()
        assert not (tmp_path / "runs-b").exists(), "the refused driver wrote nothing"
        assert first.wait(timeout=300) == 0, first.output()
    finally:
        first.kill()
    trials = trials_of(None, "search", shared_storage)
    assert len(trials) == 6 and all(t.state is TrialState.COMPLETE for t in trials)


TWO_STAGES = copy.deepcopy(SLOW)
TWO_STAGES["train"]["epochs"] = 6
TWO_STAGES["stages"] = [
    {"name": "coarse", "trials": 6, "sampler": "random"},
    {"name": "fine", "trials": 3, "sampler": "tpe", "keep_top": 2},
]


def test_a_driver_killed_five_times_finishes_exactly_its_budget(tmp_path):
    spec = write_spec(tmp_path, TWO_STAGES)
    run_dir = tmp_path / "runs"
    pause = random.Random(5)
    moments = [
        lambda: not time.sleep(pause.uniform(1.0, 8.0)),  # starting, or in the first trials
        lambda: len(counted(trials_of(run_dir, "coarse"))) == 6,  # the fine stage opening
        lambda: not time.sleep(pause.uniform(1.0, 8.0)),
        lambda: len(counted(trials_of(run_dir, "fine"))) == 3,  # choosing the champion
        lambda: not time.sleep(pause.uniform(0.5, 3.0)),
    ]
    spent = 0.0
    for moment in moments:
        driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
        try:
            driver.until(moment, timeout=180)  # (a pause says "now" when it ends)
        except AssertionError:
            pass  # it finished before the moment came: the next runs find nothing to do
        finally:
            driver.kill()
            spent += time.monotonic() - driver.started
    final = Command(tmp_path, "sweep", spec, "--run-dir", run_dir, log="final.log")
    assert final.wait(timeout=300) == 0, final.output()
    spent += time.monotonic() - final.started

    for stage, budget in (("coarse", 6), ("fine", 3)):
        trials = trials_of(run_dir, stage)
        assert len(counted(trials)) == budget, f"{stage}: exactly its budget"
        assert not [t for t in trials if t.state is TrialState.RUNNING]
    runs = mlflow_runs(run_dir, "chaos")
    assert not [r for r in runs if r.info.status == "RUNNING"], "every run closed"
    trial_runs = [r for r in runs if r.data.tags.get("caviar.role") == "trial"]
    every_trial = own(trials_of(run_dir, "coarse")) + own(trials_of(run_dir, "fine"))
    assert len(trial_runs) == len(every_trial), "one MLflow run per trial"
    assert len([r for r in runs if r.data.tags.get("caviar.role") == "sweep"]) == 1
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'chaos'")
    assert len(versions) == 1, "the champion is registered once"
    print(f"five kills and a final run: {spent:.1f} s in all")


def test_a_driver_killed_outright_leaves_no_ray_process_behind(tmp_path):
    spec = write_spec(tmp_path, SLOW)
    run_dir = tmp_path / "runs"
    driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
    try:
        driver.until(
            lambda: any(t.state is TrialState.RUNNING for t in trials_of(run_dir, "search"))
        )
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: nothing of it runs its clean-up
        driver.process.wait()
        assert driver.left_running(grace=5.0) == [], "Ray's agents and workers die with it"
    finally:
        driver.kill()
