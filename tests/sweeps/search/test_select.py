"""Seed-robust selection: the champion is the best mean over seeds, a re-tune's challenger must
beat the incumbent seed for seed by more than the tolerance, and the record shows mean ± sd."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from caviar.models.config import MlpConfig, TrainConfig
from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.select import SELECTION, Contender, choose
from caviar.sweeps.search.studies import default_storage
from caviar.sweeps.views.report import build_report
from caviar.sweeps.views.status import sweep_status
from caviar.sweeps.views.sweep_trials import load_stages
from tests.conftest import TWO_STAGES, run_local_sweep


def contender(number: int, value: float, incumbent: bool = False) -> Contender:
    trial = optuna.trial.create_trial(value=value, params={}, distributions={})
    trial.number = number
    return Contender((0, "s"), trial, {}, MlpConfig(), TrainConfig(), incumbent)


def test_the_best_mean_wins_not_the_luckiest_seed():
    lucky, steady = contender(0, 0.95), contender(1, 0.93)
    scores = {lucky.label: [0.95, 0.88, 0.87], steady.label: [0.93, 0.92, 0.93]}
    assert choose([lucky, steady], scores, Direction.MAXIMIZE) == steady.label


def test_a_challenger_must_beat_the_incumbent_seed_for_seed_by_the_tolerance():
    incumbent, challenger = contender(0, 0.370, incumbent=True), contender(1, 0.378)
    close = {incumbent.label: [0.370, 0.375, 0.380], challenger.label: [0.378, 0.377, 0.381]}
    assert choose([challenger, incumbent], close, Direction.MAXIMIZE, 0.02) == incumbent.label
    clear = {incumbent.label: [0.370, 0.375, 0.380], challenger.label: [0.420, 0.41, 0.43]}
    assert choose([challenger, incumbent], clear, Direction.MAXIMIZE, 0.02) == challenger.label
    # A seed the incumbent could not train is left out of the pairing, not counted as a loss.
    gap = {incumbent.label: [0.370, math.nan, 0.380], challenger.label: [0.371, 0.9, 0.381]}
    assert choose([challenger, incumbent], gap, Direction.MAXIMIZE, 0.02) == incumbent.label


def test_a_sweep_with_select_records_the_contenders_and_crowns_the_best_mean(tmp_path):
    sweep = run_local_sweep(tmp_path, {"stages": TWO_STAGES, "select": {"top_k": 2, "seeds": 1}})
    recorded = sweep.study("coarse").user_attrs[SELECTION]
    # One extra seed asked for, but the reference needs retune.seeds (3): seeds 0, 1, 2.
    assert recorded["seeds"] == [0, 1, 2] and len(recorded["scores"]) == 2
    means = {label: sum(s) / len(s) for label, s in recorded["scores"].items()}
    assert recorded["winner"] == max(means, key=means.get)
    assert sweep.best.label == recorded["winner"]
    version = sweep.client.get_model_version_by_alias("tiny", "champion")
    assert version.tags["trial"] == recorded["winner"]
    reference = json.loads(version.tags["reference"])
    assert reference == {"seeds": [0, 1, 2], "scores": recorded["scores"][recorded["winner"]]}

    status = sweep_status(sweep.spec, default_storage(tmp_path))
    assert status["best"]["trial"] == recorded["winner"]
    shown = {c["trial"]: c for c in status["selection"]["contenders"]}
    assert shown[recorded["winner"]]["mean"] == pytest.approx(means[recorded["winner"]])
    page = build_report(sweep.spec, load_stages(sweep.spec, default_storage(tmp_path)))
    assert "Chosen by the mean val_accuracy over seeds [0, 1, 2]" in page
    runs = sweep.runs("tags.`seeds.mean` != ''")
    assert {r.data.tags["trial"] for r in runs} == {label.split("#")[1] for label in means}
