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
TWO_STAGES["train"]["epochs"] = 8
TWO_STAGES["stages"] = [
    {"name": "coarse", "trials": 12, "sampler": "random"},
    {"name": "fine", "trials": 6, "sampler": "tpe", "keep_top": 2},
]


@pytest.fixture
def warm_cluster(tmp_path):
    """`caviar cluster up` for the run directory: a killed driver's rerun finds warm workers,
    as it would in production (a cold Ray start alone is ~6 s per rerun on two cores)."""
    run_dir = tmp_path / "runs"
    up = Command(tmp_path, "cluster", "up", "--run-dir", run_dir, "--cpus", 2, log="up.log")
    assert up.wait(timeout=120) == 0, up.output()
    yield run_dir
    Command(tmp_path, "cluster", "down", "--run-dir", run_dir, log="down.log").wait(timeout=60)


def test_a_driver_killed_five_times_finishes_exactly_its_budget(tmp_path, warm_cluster):
    run_dir = warm_cluster
    clean = copy.deepcopy(TWO_STAGES)
    clean["name"] = "clean"
    reference = Command(tmp_path, "sweep", write_spec(tmp_path, clean, "clean.yaml"),
                        "--run-dir", run_dir, log="clean.log")  # fmt: skip
    assert reference.wait(timeout=300) == 0, reference.output()
    uninterrupted = time.monotonic() - reference.started

    spec = write_spec(tmp_path, TWO_STAGES)
    pause = random.Random(5)
    moments = [
        lambda: not time.sleep(pause.uniform(2.0, 10.0)),  # starting, or in the first trials
        lambda: len(counted(trials_of(run_dir, "coarse"))) == 12,  # the fine stage opening
        lambda: not time.sleep(pause.uniform(2.0, 10.0)),
        lambda: len(counted(trials_of(run_dir, "fine"))) == 6,  # choosing the champion
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
            driver.kill()  # the driver's session: the cluster and its workers live on
            spent += time.monotonic() - driver.started
    final = Command(tmp_path, "sweep", spec, "--run-dir", run_dir, log="final.log")
    assert final.wait(timeout=300) == 0, final.output()
    spent += time.monotonic() - final.started

    for stage, budget in (("coarse", 12), ("fine", 6)):
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
    assert len(client.search_model_versions("name = 'chaos'")) == 1, "registered once"
    print(f"five kills and a final run: {spent:.1f} s; uninterrupted: {uninterrupted:.1f} s")
    # Nothing is trained twice beyond the trials cut short: starting over each time would
    # cost about six uninterrupted runs. Each of the six runs also pays its own start (joining
    # the cluster, imports: 1-2 s), a large share of a sweep this short (8.7 s once its exit
    # no longer waits on the final garbage collection): 1.2-1.5x measured before that, 2.1-2.25x
    # since. The bound leaves room for a slow, shared machine; the figure is printed.
    assert spent <= 3 * uninterrupted


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
