"""Coarse to fine on the in-process executor: boxes, carried trials, records."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
from optuna.trial import TrialState

from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.search.studies import BOX, CARRIED_FROM, KEPT, QUEUED, SPACE, default_storage
from caviar.sweeps.views.status import sweep_status
from tests.conftest import TINY_SPEC, TWO_STAGES, run_local_sweep


def test_fine_box_holds_the_best_coarse_trials_and_sits_inside_the_coarse_range(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    box = SearchSpace.load(fine.user_attrs[SPACE])
    kept = [coarse.trials[int(label.split("#")[1])] for label in fine.user_attrs[KEPT]]
    assert len(kept) == 2
    assert all(box.contains(t.params) for t in kept)
    best_two = sorted((t for t in coarse.trials if t.value is not None), key=lambda t: -t.value)[:2]
    assert {t.number for t in kept} == {t.number for t in best_two}
    lr_low, lr_high = box.box()["lr"]
    assert 1e-4 <= lr_low < lr_high <= 1.0 and (lr_low, lr_high) != (1e-4, 1.0)
    # The box spans the kept trials plus 5% of the full log range (4 decades) on each side.
    kept_lr = [t.params["lr"] for t in kept]
    assert math.log10(lr_low) == pytest.approx(max(-4, math.log10(min(kept_lr)) - 0.2))


def test_fine_trials_sample_inside_the_box_and_carry_earlier_ones(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    box = SearchSpace.load(fine.user_attrs[SPACE])
    carried = [t for t in fine.trials if CARRIED_FROM in t.user_attrs]
    own = [t for t in fine.trials if CARRIED_FROM not in t.user_attrs]
    assert len(own) == 4, "carried trials do not use the fine stage's budget"
    assert all(box.contains(t.params) for t in own)
    inside = [t for t in coarse.trials if t.state is TrialState.COMPLETE and box.contains(t.params)]
    assert sorted(t.user_attrs[CARRIED_FROM] for t in carried) == sorted(
        f"coarse#{t.number}" for t in inside
    )
    assert carried and all(t.number < own[0].number for t in carried), "carried trials come first"


def test_boxes_are_recorded_in_mlflow_optuna_and_status(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    assert coarse.user_attrs[BOX] == {"lr": [1e-4, 1.0], "momentum": [0.5, 0.99]}
    tags = swept.parent().data.tags
    assert tags["box.fine.lr"] == str(fine.user_attrs[BOX]["lr"]).replace("'", '"')
    assert tags["stage.fine.kept_from_previous"] == "2"
    children = swept.runs("tags.`caviar.role` = 'trial'")
    assert sorted(r.data.tags["stage"] for r in children) == ["coarse"] * 8 + ["fine"] * 4
    report = sweep_status(swept.spec, default_storage(swept.folder))
    assert [s["name"] for s in report["stages"]] == ["coarse", "fine"]
    assert report["stages"][1]["box"] == fine.user_attrs[BOX]
    assert sum(report["stages"][1]["trials"].values()) == 4
    assert sum(report["trials"].values()) == 12
    assert any("box around the best 2 trial(s) so far" in n for n in swept.progress.notes)


def test_a_resumed_sweep_keeps_the_recorded_box(swept, tmp_path):
    shutil.copytree(swept.folder, tmp_path, dirs_exist_ok=True)  # others share `swept`
    more = [TWO_STAGES[0], {**TWO_STAGES[1], "trials": 5}]
    resumed = run_local_sweep(tmp_path, {"stages": more})
    again = resumed.study("fine")
    assert again.user_attrs[SPACE] == swept.study("fine").user_attrs[SPACE]
    own = [t for t in again.trials if CARRIED_FROM not in t.user_attrs]
    assert len(own) == 5, "one more trial for the larger budget, in the same box"


def test_grid_stage_runs_the_whole_grid_in_ask_and_tell(tmp_path):
    stages = [{"name": "grid", "trials": 4, "sampler": "grid", "grid_points": 2}]
    sweep = run_local_sweep(tmp_path, {"stages": stages, "train": {"epochs": 1}})
    trials = sweep.study("grid").trials
    points = {(round(t.params["lr"], 12), round(t.params["1-momentum"], 12)) for t in trials}
    assert points == {(1e-4, 0.01), (1e-4, 0.5), (1.0, 0.01), (1.0, 0.5)}, "each grid point once"


def test_a_narrowed_stage_box_holds_its_queued_configurations(tmp_path):
    """Queued configurations outside the best trials' box: one in a corner of the full space,
    and batch sizes the kept trial did not use (one at least; with one trial kept the box keeps
    one batch size). Each is trained as given, inside the box, without Optuna's warning that
    a fixed value is out of range (or its error for a choice the box had dropped)."""
    space = {**TINY_SPEC["space"], "batch_size": {"choices": [16, 32, 64]}}
    queued = [{"lr": 1e-4, "momentum": 0.5, "batch_size": 16}, {"batch_size": 64}]
    stages = [TWO_STAGES[0], {**TWO_STAGES[1], "keep_top": 1, "enqueue": queued}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep = run_local_sweep(tmp_path, {"space": space, "stages": stages})
    coarse, fine = sweep.study("coarse"), sweep.study("fine")
    kept = [coarse.trials[int(label.split("#")[1])] for label in fine.user_attrs[KEPT]]
    around_kept = SearchSpace.load(coarse.user_attrs[SPACE]).narrow([t.params for t in kept], 0.05)
    box = SearchSpace.load(fine.user_attrs[SPACE])
    assert not around_kept.contains(box.to_optuna(queued[0])), "left out by the kept trial's box"
    assert set(box.box()["batch_size"]) >= {16, 64}
    for place, values in enumerate(queued):
        trial = next(t for t in fine.trials if t.user_attrs.get(QUEUED) == str(place))
        assert trial.state is TrialState.COMPLETE
        assert box.contains(trial.params)
        trained = box.to_values(trial.params)
        assert {name: trained[name] for name in values} == pytest.approx(values)
    assert not [w for w in caught if "out of range" in str(w.message)]
    assert any("best 1 trial(s) so far and its 2 queued configuration(s)" in n
               for n in sweep.progress.notes)  # fmt: skip
