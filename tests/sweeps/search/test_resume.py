"""Resuming continues the search: a stopped sweep, run again, draws new configurations, runs
interrupted grid points and queued configurations again, and redoes a stage set-up cut short."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from caviar.models.data import build_dataset
from caviar.models.sources import DigitsSource
from caviar.sweeps.search.studies import (
    CARRIED_FROM,
    FAIL_REASON,
    INTERRUPTED,
    QUEUED,
    default_storage,
    open_storage,
)
from caviar.sweeps.views.cli import app
from tests.conftest import TINY_SPEC, TWO_STAGES, run_local_sweep, spec_dict, write_spec
from tests.sweeps.search.test_driver import DiesAfter

DIGITS = DigitsSource(source="digits")


def stop_after(epochs: int) -> DiesAfter:
    return DiesAfter(build_dataset(DIGITS), epochs)


def own(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if CARRIED_FROM not in t.user_attrs]


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def test_a_sweep_stopped_three_times_evaluates_no_configuration_twice(tmp_path):
    changes = {"stages": TWO_STAGES}
    for epochs in (5, 9, 7):  # stopped mid-trial three times (one in the fine stage)
        with pytest.raises(KeyboardInterrupt):
            run_local_sweep(tmp_path, changes, executor=stop_after(epochs))
    # A fourth driver dies without cleaning up: it leaves a trial RUNNING.
    leftover = optuna.load_study(
        study_name="tiny/coarse", storage=open_storage(default_storage(tmp_path))
    )
    if sum(t.state.is_finished() for t in leftover.trials) < 8:
        leftover.ask()
    sweep = run_local_sweep(tmp_path, changes)
    evaluated = [t for stage in ("coarse", "fine") for t in own(sweep.study(stage))]
    assert len({key(t.params) for t in evaluated}) == len(evaluated), "a configuration repeated"
    for stage, budget in (("coarse", 8), ("fine", 4)):
        done = [t for t in own(sweep.study(stage)) if t.user_attrs.get(FAIL_REASON) != INTERRUPTED]
        assert len(done) == budget and all(t.state.is_finished() for t in done)


def test_an_interrupted_grid_point_is_run_again_and_no_point_twice(tmp_path):
    grid = [{"name": "grid", "trials": 4, "sampler": "grid", "grid_points": 2}]
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"stages": grid}, executor=stop_after(2))
    sweep = run_local_sweep(tmp_path, {"stages": grid})
    complete = [t for t in sweep.study("grid").trials if t.state is TrialState.COMPLETE]
    points = {key(t.params) for t in complete}
    assert len(complete) == 4 and len(points) == 4, "every grid point exactly once"


def test_an_interrupted_queued_configuration_is_queued_again(tmp_path):
    queued = {"lr": 0.05, "momentum": 0.9}
    stages = [{"name": "search", "trials": 3, "enqueue": [queued]}]
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"stages": stages}, executor=stop_after(1))
    sweep = run_local_sweep(tmp_path, {"stages": stages})
    trials = sweep.study("search").trials
    ran = [t for t in trials if t.state is TrialState.COMPLETE and t.user_attrs.get(QUEUED)]
    assert len(ran) == 1
    assert ran[0].params == pytest.approx({"lr": 0.05, "1-momentum": 0.1})


def test_a_stage_set_up_cut_short_is_done_again_once(tmp_path, monkeypatch):
    stages = [TWO_STAGES[0], {**TWO_STAGES[1], "enqueue": [{"lr": 0.05, "momentum": 0.9}]}]
    real = optuna.Study.enqueue_trial

    def dies(self, *args, **kwargs):  # the driver dies while queueing the fine stage's config
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.Study, "enqueue_trial", dies)
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"stages": stages})
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real)
    sweep = run_local_sweep(tmp_path, {"stages": stages})
    fine = sweep.study("fine").trials
    carried = [t.user_attrs[CARRIED_FROM] for t in fine if CARRIED_FROM in t.user_attrs]
    assert carried and len(carried) == len(set(carried)), "carried trials added once"
    assert sum(1 for t in fine if t.user_attrs.get(QUEUED) == "0") == 1


def test_a_sweep_refuses_to_resume_on_a_data_file_replaced_under_its_name(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    digits.iloc[:400].to_csv(tmp_path / "rows.csv", index=False)
    data = {"source": "csv", "path": "rows.csv", "target": "label"}
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"data": data}, executor=stop_after(3))
    digits.iloc[400:800].to_csv(tmp_path / "rows.csv", index=False)
    spec = write_spec(tmp_path, spec_dict(data=data))
    result = CliRunner().invoke(app, ["sweep", str(spec), "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "stage 'search' was started on other contents of rows.csv" in flat
    assert "scored on the old file" in flat


def test_a_started_stage_refuses_a_configuration_queued_after_it_started(tmp_path):
    stage = TINY_SPEC["stages"][0]
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"stages": [stage]}, executor=stop_after(3))
    queued = {**stage, "enqueue": [{"lr": 0.01, "momentum": 0.9}]}
    spec = write_spec(tmp_path, spec_dict(stages=[queued]))
    result = CliRunner().invoke(app, ["sweep", str(spec), "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "stage 'search' was started with enqueue [], the spec now says" in " ".join(
        result.output.split()
    )


def test_a_started_stage_refuses_other_epochs_or_pruner_before_writing(tmp_path):
    stage = {**TINY_SPEC["stages"][0], "epochs": 4}
    with pytest.raises(KeyboardInterrupt):
        run_local_sweep(tmp_path, {"stages": [stage]}, executor=stop_after(3))
    before = (tmp_path / "mlflow.db").stat().st_mtime_ns
    spec = write_spec(tmp_path, spec_dict(stages=[{**stage, "epochs": 6}]))
    result = CliRunner().invoke(app, ["sweep", str(spec), "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "stage 'search' was started with epochs 4, the spec now says 6" in result.output
    assert (tmp_path / "mlflow.db").stat().st_mtime_ns == before, "nothing written"
    assert not (tmp_path / "spool" / "tiny" / "ops.jsonl").exists()
