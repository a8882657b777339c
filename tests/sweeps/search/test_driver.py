"""The driver's search logic on the in-process executor: real Optuna, real MLflow, no Ray."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from caviar.models.data import build_dataset
from caviar.models.errors import CaviarError
from caviar.models.executor import EpochDone, TrialCrashed
from caviar.models.inprocess import InProcessExecutor
from caviar.models.sources import DigitsSource
from caviar.sweeps.search.studies import (
    FAIL_REASON,
    INTERRUPTED,
    MLFLOW_RUN_KEY,
    default_storage,
    open_storage,
    study_name,
)
from tests.conftest import TINY_SPEC, run_local_sweep


def test_every_trial_reaches_a_final_state_and_the_pruner_prunes(tmp_path):
    sweep = run_local_sweep(tmp_path)
    trials = sweep.study("search").trials
    assert len(trials) == 8
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    assert TrialState.PRUNED in {t.state for t in trials}, "four decades of lr have weak trials"
    assert sweep.best.value == max(t.value for t in trials if t.state is TrialState.COMPLETE)
    assert len(sweep.progress.ended) == 8


def test_momentum_is_searched_as_one_minus_beta(tmp_path):
    sweep = run_local_sweep(tmp_path)
    trial = sweep.study("search").trials[0]
    assert "1-momentum" in trial.params and "momentum" not in trial.params
    assert 0.5 <= sweep.best.params["momentum"] <= 0.99


def test_diverging_trials_fail_with_reason_and_the_sweep_goes_on(tmp_path):
    changes = {
        "model": {"hidden_units": 16, "layers": 2, "batch_norm": False},
        "space": {"lr": {"scale": "log", "low": 1e8, "high": 1e10}},
        "stages": [{"name": "search", "trials": 3}],
    }
    sweep = run_local_sweep(tmp_path, changes)
    trials = sweep.study("search").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs[FAIL_REASON] for t in trials} == {"diverged"}
    runs = sweep.runs("tags.state = 'failed'")
    assert len(runs) == 3 and {r.data.tags["failure_reason"] for r in runs} == {"diverged"}
    assert {e.reason for e in sweep.progress.ended} == {"diverged"}
    assert sweep.best.value is None and "not logged" not in " ".join(sweep.progress.notes)


def test_mlflow_holds_one_child_per_trial_with_epoch_curves(tmp_path):
    sweep = run_local_sweep(tmp_path)
    trials = sweep.study("search").trials
    children = sweep.runs("tags.`caviar.role` = 'trial'")
    assert len(children) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {sweep.parent().info.run_id}
    by_number = {int(r.data.tags["trial"]): r for r in children}
    for trial in trials:
        run = by_number[trial.number]
        curve = sweep.client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in curve] == sorted(trial.intermediate_values)
        assert [m.value for m in curve] == [trial.intermediate_values[m.step] for m in curve]
        assert (
            run.data.tags["state"] == {"COMPLETE": "complete", "PRUNED": "pruned"}[trial.state.name]
        )
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        if trial.state is TrialState.PRUNED:
            assert run.data.tags["pruned_at_epoch"] == str(trial.last_step)


def test_mlflow_writes_held_at_the_start_go_out_once_the_first_epoch_is_in(tmp_path):
    sweep = run_local_sweep(tmp_path, hold_seconds=600)  # only the driver can release them
    parent = sweep.parent().info
    last_end = max(t.datetime_complete for t in sweep.study("search").trials)
    assert parent.start_time / 1000 < last_end.timestamp(), "in MLflow while the sweep ran"
    assert parent.status == "FINISHED"


def test_running_again_runs_nothing_new(tmp_path):
    first = run_local_sweep(tmp_path)
    again = run_local_sweep(tmp_path)
    assert len(again.study("search").trials) == len(first.study("search").trials)
    assert again.progress.ended == []
    assert len(again.runs()) == len(first.runs()), "no new MLflow run, not even a parent"


def test_trials_left_running_by_a_dead_driver_are_failed_and_re_issued(tmp_path):
    stage = TINY_SPEC["stages"][0]
    first = run_local_sweep(tmp_path, {"stages": [{**stage, "trials": 2}]})
    # A driver that died after asking for two more trials leaves them RUNNING.
    dead = optuna.load_study(study_name=study_name("tiny", "search"), storage=first.storage)
    for _ in range(2):
        dead.ask(first.spec.search_space.distributions())
    sweep = run_local_sweep(tmp_path)
    trials = sweep.study("search").trials
    interrupted = [t for t in trials if t.user_attrs.get(FAIL_REASON) == INTERRUPTED]
    assert [t.number for t in interrupted] == [2, 3]
    assert all(t.state is TrialState.FAIL for t in interrupted)
    assert len(trials) - len(interrupted) == 8, "the interrupted budget is issued again, no more"
    assert any("re-issued" in note for note in sweep.progress.notes)


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


def test_an_interrupted_sweep_resumes_to_exactly_its_budget(tmp_path):

    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(
            tmp_path, executor=DiesAfter(build_dataset(DigitsSource(source="digits")), 9)
        )
    storage = open_storage(default_storage(tmp_path))
    cut = optuna.load_study(study_name=study_name("tiny", "search"), storage=storage)
    assert all(t.state is not TrialState.RUNNING for t in cut.trials)
    finished_before = {t.number: t.params for t in cut.trials if t.state is not TrialState.FAIL}
    sweep = run_local_sweep(tmp_path)
    trials = sweep.study("search").trials
    assert len([t for t in trials if t.user_attrs.get(FAIL_REASON) != INTERRUPTED]) == 8
    for number, params in finished_before.items():  # finished trials are kept, not re-run
        assert trials[number].params == params
    assert sweep.runs("attributes.status = 'RUNNING'") == [], "no MLflow run is left open"
    assert len(sweep.runs("tags.`caviar.role` = 'sweep'")) == 1


class RunsAhead(InProcessExecutor):
    """A worker far ahead of the driver: one wait brings every epoch left of a trial."""

    def wait(self, timeout):
        if not self._due:
            return []
        key = self._due.popleft()
        trainer = self._trainers[key]
        return [EpochDone(key, trainer.run_epoch()) for _ in range(trainer.config.epochs)]

    def proceed(self, key):
        pass  # everything was trained already


def test_epochs_worked_ahead_past_a_prune_are_dropped(tmp_path):
    spec = {"stages": [{**TINY_SPEC["stages"][0], "trials": 6}]}
    data = build_dataset(DigitsSource(source="digits"))
    sweep = run_local_sweep(tmp_path, spec, executor=RunsAhead(data))
    trials = sweep.study("search").trials
    assert [t.state for t in trials].count(TrialState.PRUNED) >= 1
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for t in trials:  # nothing is recorded after the epoch that ended a trial
        assert max(t.intermediate_values) == len(t.intermediate_values) - 1 + min(
            t.intermediate_values
        )
        if t.state is TrialState.PRUNED:
            assert max(t.intermediate_values) < TINY_SPEC["train"]["epochs"]


class LooksAtTheStudy(InProcessExecutor):
    """Notes the stage's trials when the driver first waits for results."""

    def __init__(self, data, folder):
        super().__init__(data)
        self.folder, self.first_wait = folder, None

    def wait(self, timeout):
        if self.first_wait is None:
            storage = open_storage(default_storage(self.folder))
            study = optuna.load_study(study_name=study_name("tiny", "search"), storage=storage)
            self.first_wait = [t.state for t in study.trials]
        return super().wait(timeout)


def test_the_next_trial_is_drawn_while_every_worker_trains(tmp_path):
    executor = LooksAtTheStudy(build_dataset(DigitsSource(source="digits")), tmp_path)
    sweep = run_local_sweep(tmp_path, executor=executor)
    # two trials on the two workers, and the third drawn ahead, before any result is in
    assert executor.first_wait == [TrialState.RUNNING] * 3
    assert len(sweep.study("search").trials) == 8, "drawing ahead spends no extra budget"


class WorkersNeverStart(InProcessExecutor):
    """A cluster whose workers die at once (as with mismatched Ray auth modes)."""

    def start(self, job):
        self._due.append(job.key)

    def wait(self, timeout):
        return [TrialCrashed(self._due.popleft(), "worker died 3 times: gone")] if self._due else []


def test_a_cluster_that_cannot_start_workers_stops_the_sweep_early(tmp_path):

    with pytest.raises(CaviarError, match="5 trials in a row lost their worker"):
        run_local_sweep(
            tmp_path, executor=WorkersNeverStart(build_dataset(DigitsSource(source="digits")))
        )
    trials = optuna.load_study(
        study_name=study_name("tiny", "search"),
        storage=open_storage(default_storage(tmp_path)),
    ).trials
    assert len(trials) < 8, "the budget is not burnt on a broken cluster"


class WorkersSometimesDie(InProcessExecutor):
    """Every other trial loses its worker before its first epoch: a flaky node, not a
    broken cluster."""

    def __init__(self, data):
        super().__init__(data)
        self._dead: list[int] = []

    def start(self, job):
        if job.key % 2:
            self._dead.append(job.key)
        else:
            super().start(job)

    def wait(self, timeout):
        dead, self._dead = self._dead, []
        return [TrialCrashed(k, "worker died 3 times: gone") for k in dead] + super().wait(timeout)


@pytest.mark.chaos
def test_only_workers_dying_in_a_row_stop_the_sweep(tmp_path):
    executor = WorkersSometimesDie(build_dataset(DigitsSource(source="digits")))
    changes = {"stages": [{"name": "search", "trials": 16, "sampler": "random"}]}
    sweep = run_local_sweep(tmp_path, changes, executor=executor)
    states = [t.state for t in sweep.study("search").trials]
    assert len(states) == 16, "the whole budget ran"
    assert states.count(TrialState.FAIL) >= 5, "more deaths than the limit, but none in a row"


def test_a_trial_whose_run_was_never_created_gets_one_closed_run(tmp_path):
    stage = TINY_SPEC["stages"][0]
    first = run_local_sweep(tmp_path, {"stages": [{**stage, "trials": 2}]})
    # A driver killed after recording a trial's run key, before creating the run.
    dead = optuna.load_study(study_name=study_name("tiny", "search"), storage=first.storage)
    trial = dead.ask(first.spec.search_space.distributions())
    trial.set_user_attr(MLFLOW_RUN_KEY, "never-created")
    sweep = run_local_sweep(tmp_path)
    runs = sweep.runs("tags.`caviar.key` = 'never-created'")
    assert len(runs) == 1 and runs[0].info.status != "RUNNING"
    assert runs[0].data.tags["failure_reason"] == INTERRUPTED
    assert not sweep.runs("attributes.status = 'RUNNING'"), "no run is left open"
    assert len(sweep.runs("tags.`caviar.role` = 'trial'")) == len(sweep.study("search").trials)
