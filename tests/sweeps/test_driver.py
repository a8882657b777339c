"""The driver's search logic on the in-process executor: real Optuna, real MLflow, no Ray."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from models.data import build_dataset
from sweeps.driver import SweepDriver
from sweeps.executor import EpochDone, InProcessExecutor
from sweeps.spec import load_spec
from sweeps.studies import FAIL_REASON, INTERRUPTED, open_storage, study_name
from sweeps.tracking import Tracker
from tests.conftest import RecordingProgress, spec_dict, write_spec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_dataset(load_spec(write_spec(tmp_path_factory.mktemp("spec"))).data)


def drive(tmp_path, data, spec_changes=None, executor=None):
    spec = load_spec(write_spec(tmp_path, spec_dict(**(spec_changes or {}))))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", spec.name, tmp_path / "artifacts")
    tracker.start_sweep(spec.name, {}, {}, {})
    progress = RecordingProgress()
    driver = SweepDriver(spec, storage, tracker, executor or InProcessExecutor(data), progress)
    best = driver.run()
    study = optuna.load_study(study_name=study_name(spec.name, "search"), storage=storage)
    return best, study, progress, tracker


def test_every_trial_reaches_a_final_state_and_the_pruner_prunes(tmp_path, data):
    best, study, progress, _ = drive(tmp_path, data)
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for s in states)
    assert TrialState.PRUNED in states, "a learning-rate range of four decades has weak trials"
    complete = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert best.value == max(t.value for t in complete)
    assert len(progress.ended) == 8


def test_momentum_is_searched_as_one_minus_beta(tmp_path, data):
    best, study, *_ = drive(tmp_path, data)
    trial = study.trials[0]
    assert "1-momentum" in trial.params and "momentum" not in trial.params
    assert 0.5 <= best.params["momentum"] <= 0.99


def test_diverging_trials_fail_with_reason_and_the_sweep_goes_on(tmp_path, data):
    changes = {
        "model": {"hidden_units": 16, "layers": 2, "batch_norm": False},
        "space": {"lr": {"scale": "log", "low": 1e8, "high": 1e10}},
        "stages": [{"name": "search", "trials": 3}],
    }
    _, study, progress, tracker = drive(tmp_path, data, changes)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs[FAIL_REASON] for t in study.trials} == {"diverged"}
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.state = 'failed'")
    assert len(runs) == 3 and {r.data.tags["failure_reason"] for r in runs} == {"diverged"}
    assert {e.reason for e in progress.ended} == {"diverged"}


def test_mlflow_holds_one_child_per_trial_with_epoch_curves(tmp_path, data):
    _, study, _, tracker = drive(tmp_path, data)
    client: MlflowClient = tracker.client
    children = client.search_runs([tracker.experiment_id], "tags.`caviar.role` = 'trial'")
    assert len(children) == len(study.trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {tracker.parent_run_id}
    by_number = {int(r.data.tags["trial"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        curve = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == sorted(trial.intermediate_values)
        assert (
            run.data.tags["state"] == {"COMPLETE": "complete", "PRUNED": "pruned"}[trial.state.name]
        )
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        if trial.state is TrialState.PRUNED:
            assert run.data.tags["pruned_at_epoch"] == str(trial.last_step)


def test_running_again_runs_nothing_new(tmp_path, data):
    _, first, *_ = drive(tmp_path, data)
    _, again, progress, _ = drive(tmp_path, data)
    assert len(again.trials) == len(first.trials) and progress.ended == []


def test_trials_left_running_by_a_dead_driver_are_failed_and_re_issued(tmp_path, data):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    spec = load_spec(write_spec(tmp_path, spec_dict()))
    # A driver that died after asking for two trials leaves them RUNNING.
    dead = optuna.create_study(
        storage=storage, study_name=study_name("tiny", "search"), direction="maximize"
    )
    dead.set_user_attr("fingerprint", spec.fingerprint())
    for _ in range(2):
        dead.ask(spec.search_space.distributions())
    _, study, progress, _ = drive(tmp_path, data)
    interrupted = [t for t in study.trials if t.user_attrs.get(FAIL_REASON) == INTERRUPTED]
    assert [t.number for t in interrupted] == [0, 1]
    assert all(t.state is TrialState.FAIL for t in interrupted)
    budgeted = [t for t in study.trials if t not in interrupted]
    assert len(budgeted) == 8, "the interrupted trials' budget is issued again, nothing more"
    assert any("re-issued" in note for note in progress.notes)


class DiesAfter(InProcessExecutor):
    """Stops the driver (as Ctrl-C would) after a number of epoch reports."""

    def __init__(self, data, epochs):
        super().__init__(data)
        self.left = epochs

    def wait(self, timeout):
        events = super().wait(timeout)
        self.left -= sum(isinstance(e, EpochDone) for e in events)
        if self.left < 0:
            raise KeyboardInterrupt
        return events


def test_an_interrupted_sweep_resumes_to_exactly_its_budget(tmp_path, data):
    with pytest.raises(KeyboardInterrupt):
        drive(tmp_path, data, executor=DiesAfter(data, epochs=9))
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    cut = optuna.load_study(study_name=study_name("tiny", "search"), storage=storage)
    assert all(t.state is not TrialState.RUNNING for t in cut.trials)
    finished_before = {t.number: t.params for t in cut.trials if t.state is not TrialState.FAIL}
    _, study, _, tracker = drive(tmp_path, data)
    counted = [t for t in study.trials if t.user_attrs.get(FAIL_REASON) != INTERRUPTED]
    assert len(counted) == 8
    for number, params in finished_before.items():  # finished trials are kept, not re-run
        assert study.trials[number].params == params
    open_runs = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")
    assert open_runs == [], "no MLflow run is left RUNNING after a resume"
