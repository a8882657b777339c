"""Workers that die, hang or diverge mid-sweep: the sweep finishes its budget regardless, every
trial final, one MLflow run per trial."""

from __future__ import annotations

import copy
import os
import signal
import time

import pytest
from optuna.trial import TrialState

from caviar.sweeps.search.studies import FAIL_REASON
from tests.chaos.support import SLOW, Command, mlflow_runs, study, trial_workers
from tests.conftest import write_spec

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def epochs_done(run_dir, stage="search"):
    try:
        trials = study(run_dir, "chaos", stage).trials
    except (KeyError, FileNotFoundError, ValueError):
        return 0
    return sum(len(t.intermediate_values) for t in trials)


def assert_one_run_per_trial(run_dir, trials):
    runs = mlflow_runs(run_dir, "chaos")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trial_runs = [r for r in runs if r.data.tags.get("caviar.role") == "trial"]
    assert len(trial_runs) == len(trials), "one MLflow run per trial, none duplicated"
    assert len({r.info.run_name for r in trial_runs}) == len(trial_runs)


def training_worker(driver: Command) -> int:
    """A worker of the command seen mid-call, as soon as there is one. The one seen is the one
    returned: asking again could find none (between two trials a worker runs no call)."""
    found: list[int] = []
    driver.until(lambda: bool(found.extend(trial_workers(driver.pid, training=True)) or found))
    return found[0]


def test_a_worker_killed_three_times_mid_trial_costs_nothing_but_time(tmp_path):
    # Long enough trials that the kills land in the search, not in the champion's seeds after
    # it: a worker returns up to 0.5 s of epochs at once, so progress comes in jumps.
    spec = write_spec(tmp_path, {**SLOW, "train": {**SLOW["train"], "epochs": 30}})
    run_dir = tmp_path / "runs"
    driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
    try:
        for kill in range(3):  # each once the kill before has cost its trial a restart
            driver.until(
                lambda k=kill: (
                    driver.output().count("worker lost") >= k
                    and epochs_done(run_dir) >= 6 * (k + 1)
                )
            )
            os.kill(training_worker(driver), signal.SIGKILL)
        assert driver.wait(timeout=300) == 0, driver.output()
    finally:
        driver.kill()
    assert driver.output().count("worker lost") >= 3
    trials = study(run_dir, "chaos", "search").trials
    assert len(trials) == 6 and all(t.state is TrialState.COMPLETE for t in trials)
    assert_one_run_per_trial(run_dir, trials)


def both_trials_past_their_first_epochs(run_dir, epochs):
    """Both workers are in a trial, past its first epochs and short of its last ones."""
    try:
        trials = study(run_dir, "chaos", "search").trials
    except (KeyError, FileNotFoundError, ValueError):
        return False
    # RUNNING also counts the next trial, drawn while both workers train (no epoch yet).
    running = [t for t in trials if t.state is TrialState.RUNNING and t.intermediate_values]
    return len(running) == 2 and all(
        2 <= len(t.intermediate_values) <= epochs - 10 for t in running
    )


def test_hung_workers_time_out_and_the_sweep_completes(tmp_path):
    spec_dict = copy.deepcopy(SLOW)
    spec_dict["parallel"]["epoch_timeout"] = 3
    # Long trials leave the test a window of many epochs (about 2 s) to catch both workers
    # mid-trial: with 12 it was 6 epochs, and as epochs got faster the sweep could finish
    # between two looks.
    spec_dict["train"]["epochs"] = 40
    spec = write_spec(tmp_path, spec_dict)
    run_dir = tmp_path / "runs"
    driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
    try:
        driver.until(lambda: both_trials_past_their_first_epochs(run_dir, 40))
        for hung in trial_workers(driver.pid):
            os.kill(hung, signal.SIGSTOP)  # alive, but they never answer again
        stopped = time.monotonic()
        assert driver.wait(timeout=300) == 0, driver.output()
        finished = time.monotonic() - stopped
    finally:
        driver.kill()
    trials = study(run_dir, "chaos", "search").trials
    timed_out = [t for t in trials if str(t.user_attrs.get(FAIL_REASON)).startswith("timeout")]
    assert len(timed_out) == 2 and all(t.state is TrialState.FAIL for t in timed_out)
    assert sum(t.state is TrialState.COMPLETE for t in trials) == 4
    assert finished < 90, f"the sweep took {finished:.0f} s after its workers hung"
    assert_one_run_per_trial(run_dir, trials)


def test_a_diverged_trial_fails_once_and_is_not_retried(tmp_path):
    spec_dict = copy.deepcopy(SLOW)
    spec_dict["model"] = {"hidden_units": 16, "layers": 2, "batch_norm": False}
    spec_dict["space"] = {"lr": {"scale": "log", "low": 1.0e8, "high": 1.0e10}}
    spec_dict["stages"] = [{"name": "search", "trials": 3}]
    spec = write_spec(tmp_path, spec_dict)
    run_dir = tmp_path / "runs"
    driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
    try:
        assert driver.wait(timeout=300) == 0, driver.output()
    finally:
        driver.kill()
    trials = study(run_dir, "chaos", "search").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs[FAIL_REASON] for t in trials} == {"diverged"}
    assert all(len(t.intermediate_values) == 0 for t in trials), "no epoch after the NaN one"
    assert "worker lost" not in driver.output() and "restarting" not in driver.output()
    assert_one_run_per_trial(run_dir, trials)
