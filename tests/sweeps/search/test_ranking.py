"""One definition of the best trial: objective, then final validation loss, then the earlier
trial; and the same best in the driver, `caviar status`, the report and the CLI summary."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.ranking import VAL_LOSS, best_trials, ranked, sweep_best
from caviar.sweeps.search.studies import default_storage
from caviar.sweeps.views.cli import app
from caviar.sweeps.views.report import build_report
from caviar.sweeps.views.status import sweep_status
from caviar.sweeps.views.sweep_trials import load_stages
from tests.conftest import TWO_STAGES, run_local_sweep


def finished(number, value, val_loss=None, state=TrialState.COMPLETE):
    trial = optuna.trial.create_trial(
        state=state,
        value=value,
        params={"lr": 0.1},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1, log=True)},
        user_attrs={VAL_LOSS: val_loss} if val_loss is not None else {},
    )
    trial.number = number
    return trial


def test_best_trials_by_count_and_by_share():
    trials = [(0, finished(i, v)) for i, v in enumerate([0.5, 0.9, 0.7, 0.8])]
    trials += [(0, finished(9, None, state=TrialState.PRUNED))] * 6
    assert [t.value for _, t in best_trials(trials, 2, Direction.MAXIMIZE)] == [0.9, 0.8]
    # A share of all ten finished trials: 0.3 -> 3 trials.
    top = best_trials(trials, 0.3, Direction.MAXIMIZE)
    assert [t.value for _, t in top] == [0.9, 0.8, 0.7]
    assert [t.value for _, t in best_trials(trials, 1, Direction.MINIMIZE)] == [0.5]


def test_ties_go_to_the_lower_validation_loss_then_the_earlier_trial():
    trials = [
        (0, finished(0, 0.9, val_loss=0.40)),
        (0, finished(1, 0.9, val_loss=0.30)),
        (1, finished(0, 0.9, val_loss=0.30)),  # same loss, later stage
        (0, finished(2, 0.9)),  # no recorded loss: ranks after those with one
        (0, finished(3, 0.8, val_loss=0.10)),
    ]
    order = [(stage, t.number) for stage, t in ranked(trials, Direction.MAXIMIZE)]
    assert order == [(0, 1), (1, 0), (0, 0), (0, 2), (0, 3)]
    stages = [("coarse", [t for s, t in trials if s == 0]), ("fine", [trials[2][1]])]
    assert sweep_best(stages, Direction.MAXIMIZE)[0] == "coarse#1"
    assert sweep_best(stages, Direction.MAXIMIZE, winner="fine#0")[0] == "fine#0"


def test_status_report_and_summary_name_the_same_best_trial(tmp_path):
    # Digits' 360 validation rows and few epochs: equal accuracies are common.
    sweep = run_local_sweep(tmp_path, {"stages": TWO_STAGES})
    status = sweep_status(sweep.spec, default_storage(tmp_path))
    assert status["best"]["trial"] == sweep.best.label
    assert status["best"]["value"] == pytest.approx(sweep.best.value)
    page = build_report(sweep.spec, load_stages(sweep.spec, default_storage(tmp_path)))
    assert f"(trial {sweep.best.label})" in page
    version = sweep.client.get_model_version_by_alias("tiny", "champion")
    assert version.tags["trial"] == sweep.best.label
    result = CliRunner().invoke(
        app, ["status", str(tmp_path / "spec.yaml"), "--run-dir", str(tmp_path), "--json"]
    )
    assert json.loads(result.stdout)["best"]["trial"] == sweep.best.label
