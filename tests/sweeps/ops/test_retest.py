"""Re-test and re-tune: verdicts on fresh and shifted data, champion history."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import optuna
import pytest
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from caviar.models.data import build_dataset
from caviar.models.inprocess import InProcessExecutor
from caviar.sweeps.ops.retest import RETEST_ROLE, champion_of, current_data, judge, record
from caviar.sweeps.ops.retune import previous_best, retune_name, retune_stages
from caviar.sweeps.search.specfile import load_spec
from caviar.sweeps.search.studies import (
    INCUMBENT,
    default_storage,
    load_study,
    open_storage,
    study_name,
)
from caviar.sweeps.views.cli import app
from tests.conftest import TINY_SPEC, TWO_STAGES, spec_dict, write_spec

runner = CliRunner()


def shifted_digits(folder):
    """The digits as they come now: a small recent sample. An epoch has a few steps instead of
    a few dozen, so the champion's learning rate underfits and a larger one wins clearly."""
    digits = load_digits()
    recent = np.random.default_rng(0).permutation(len(digits.target))[:200]
    path = folder / "digits-now.npz"
    np.savez(path, pixel=digits.data[recent], label=digits.target[recent])  # the same columns
    return path


def copy_of(swept, tmp_path, **changes):
    """The session's two-stage sweep, copied, with its spec changed (retune section...)."""
    shutil.copytree(swept.folder, tmp_path, dirs_exist_ok=True)
    spec = spec_dict(stages=TWO_STAGES, **changes)
    return write_spec(tmp_path, spec), tmp_path


def test_champion_is_found_with_its_configuration(swept):
    champion = champion_of(swept.spec, swept.tracking_uri)
    assert champion.trial == swept.best.label
    assert champion.score == pytest.approx(swept.best.value)
    assert champion.values(swept.spec.space) == pytest.approx(swept.best.params)
    assert champion.train.epochs == 4 and champion.model.hidden_units == 32


def test_fresh_on_unchanged_data(swept):
    champion = champion_of(swept.spec, swept.tracking_uri)
    verdict = judge(swept.spec, champion, InProcessExecutor(build_dataset(swept.spec.data)))
    assert verdict.verdict == "fresh", verdict.reasons
    assert len(verdict.retest["scores"]) == 3
    # The first seed is the champion's own: on the same data it reproduces its score.
    assert verdict.retest["scores"][0] == pytest.approx(champion.score, abs=1e-6)
    assert verdict.retest["drop"] <= swept.spec.retune.tolerance


def test_stale_on_shifted_data(swept, tmp_path):
    now = {"source": "npz", "path": str(shifted_digits(tmp_path)), "target": "label"}
    spec = load_spec(write_spec(tmp_path, spec_dict(stages=TWO_STAGES, retune={"data": now})))
    champion = champion_of(spec, swept.tracking_uri)
    verdict = judge(spec, champion, InProcessExecutor(current_data(spec)))
    assert verdict.verdict == "stale"
    assert verdict.retest["drop"] > spec.retune.tolerance
    assert "dropped by" in verdict.reasons[0]


def test_stale_when_too_old(swept):
    champion = champion_of(swept.spec, swept.tracking_uri)
    later = champion.promoted_at + timedelta(days=31)
    verdict = judge(swept.spec, champion, InProcessExecutor(build_dataset(swept.spec.data)), later)
    assert verdict.verdict == "stale" and "days old" in verdict.reasons[-1]


def test_each_retest_is_an_mlflow_run(swept, tmp_path):
    _, folder = copy_of(swept, tmp_path)
    champion = champion_of(swept.spec, swept.tracking_uri)
    verdict = judge(swept.spec, champion, InProcessExecutor(build_dataset(swept.spec.data)))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    record(verdict, swept.spec, uri, folder / "spool" / "tiny")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`caviar.role` = '{RETEST_ROLE}'")
    assert run.data.tags["verdict"] == "fresh"
    assert run.data.metrics["recorded_score"] == pytest.approx(champion.reference_score)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "retest_score")] == [0, 1, 2]


def test_retest_without_a_champion_is_bad_input(tmp_path):
    result = runner.invoke(app, ["retest", str(write_spec(tmp_path)), "--run-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no champion for 'tiny'" in result.output


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_retest_and_retune_through_the_cli_recover_on_shifted_data(swept, tmp_path):
    now = {"source": "npz", "path": str(shifted_digits(tmp_path)), "target": "label"}
    retune = {"data": now, "trials": 6, "explore": 0.34, "keep_previous": 2}
    spec, folder = copy_of(swept, tmp_path, retune=retune)
    where = ["--run-dir", str(folder)]

    fresh = runner.invoke(
        app,
        [
            "retest",
            str(write_spec(tmp_path, spec_dict(stages=TWO_STAGES), "fresh.yaml")),
            *where,
            "--json",
        ],
    )
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["verdict"] == "fresh"

    stale = runner.invoke(app, ["retest", str(spec), *where, "--json"])
    assert stale.exit_code == 3, stale.output
    before = json.loads(stale.stdout)
    assert before["verdict"] == "stale"

    retuned = runner.invoke(app, ["retune", str(spec), *where, "--json"])
    assert retuned.exit_code == 0, retuned.output
    summary = json.loads(retuned.stdout)
    assert summary["replaced"] is True and summary["retune"].startswith("tiny.retune-")
    assert summary["best"]["value"] > summary["incumbent"]["score_now"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    new = client.get_model_version_by_alias("tiny", "champion")
    old = client.get_model_version_by_alias("tiny", "previous-champion")
    assert int(new.version) == int(old.version) + 1, "the history of champions is kept"
    assert new.tags["sweep"].startswith("tiny.retune-")

    again = runner.invoke(app, ["retest", str(spec), *where, "--json"])
    after = json.loads(again.stdout)
    assert after["champion"]["version"] == str(new.version)
    assert after["retest"]["mean"] > before["retest"]["mean"], "re-tuning recovered accuracy"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_a_retune_after_the_space_moved_trains_the_champion_as_it_was(swept, tmp_path):
    """The user moved the learning rate's range away from the champion's: the re-tune's warm
    stage still trains the champion as it is (its space widened, and said so), and the fine
    stage searches inside the new range."""
    spec, folder = copy_of(swept, tmp_path)
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    lr = champion_of(load_spec(spec), tracking).params["lr"]
    moved = {"scale": "log", "low": min(lr * 10, 0.5), "high": 1.0}
    if lr > 0.05:
        moved = {"scale": "log", "low": 1e-4, "high": lr / 10}
    space = {**TINY_SPEC["space"], "lr": moved}
    changes = {"space": space, "retune": {"trials": 2, "explore": 0.5, "keep_previous": 0}}
    spec = write_spec(tmp_path, spec_dict(stages=TWO_STAGES, **changes))
    result = runner.invoke(app, ["retune", str(spec), "--run-dir", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert "stage warm: configurations it evaluates first lie outside" in result.output
    name = json.loads(result.stdout)["retune"]
    storage = open_storage(default_storage(folder))
    warm = load_study(storage, study_name(name, "warm"))
    fine = load_study(storage, study_name(name, "fine"))
    assert warm is not None and fine is not None
    (incumbent,) = [t for t in warm.trials if INCUMBENT in t.user_attrs]
    assert incumbent.params["lr"] == pytest.approx(lr) and incumbent.value is not None
    assert all(moved["low"] <= t.params["lr"] <= moved["high"] for t in fine.trials)


def test_a_retune_refuses_a_spec_that_would_train_the_champion_otherwise(swept, tmp_path):
    model = {**TINY_SPEC["model"], "layers": 2}
    spec, folder = copy_of(swept, tmp_path, model=model)
    result = runner.invoke(app, ["retune", str(spec), "--run-dir", str(folder)])
    assert result.exit_code == 2
    assert "no longer trains champion v1 as it was trained (model.layers: spec 2, champion 1)" in (
        " ".join(result.output.split())
    )
    studies = optuna.get_all_study_names(open_storage(default_storage(folder)))
    assert not [name for name in studies if "retune" in name], "nothing started"


def test_previous_bests_are_read_through_the_space_their_stage_recorded(swept, tmp_path):
    """Momentum searched on log(1 - x) then, linearly now; weight decay searched now only:
    each earlier best keeps its own momentum and the weight decay the sweep trained with."""
    space = {
        **TINY_SPEC["space"],
        "momentum": {"scale": "linear", "low": 0.5, "high": 0.99},
        "weight_decay": {"scale": "log", "low": 1e-6, "high": 1e-2},
    }
    spec, folder = copy_of(swept, tmp_path, space=space)
    loaded = load_spec(spec)
    champion = champion_of(loaded, f"sqlite:///{folder / 'mlflow.db'}")
    best = previous_best(loaded, default_storage(folder), champion, 2)
    trials = {
        round(1 - t.params["1-momentum"], 9): (f"{name}#{t.number}", t)
        for name in ("coarse", "fine")
        for t in swept.study(name).trials
    }
    assert len(best) == 2
    for values in best:
        assert set(values) == {"lr", "momentum", "weight_decay"}
        assert values["weight_decay"] == champion.train.weight_decay == 0.0
        label, trial = trials[round(values["momentum"], 9)]
        assert values["lr"] == trial.params["lr"] and label != champion.trial


def test_an_edited_spec_names_a_new_retune_and_a_new_budget_does_not(swept, tmp_path):
    spec, folder = copy_of(swept, tmp_path)
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    loaded = load_spec(spec)
    champion = champion_of(loaded, tracking)

    def name(**changes):
        edited = write_spec(tmp_path, spec_dict(stages=TWO_STAGES, **changes), "edited.yaml")
        return retune_name(load_spec(edited), champion, tracking)

    lr = {"scale": "log", "low": 1e-3, "high": 1.0}
    assert name() == retune_name(loaded, champion, tracking), "the same spec continues it"
    assert name(retune={"trials": 9}) == name(), "a budget is not an edit"
    assert name(space={**TINY_SPEC["space"], "lr": lr}) != name()


def test_validate_reads_retune_data_and_its_errors_name_its_fields(swept, tmp_path):
    missing = {"source": "csv", "path": "data.csv", "target": "label"}
    spec, folder = copy_of(swept, tmp_path, retune={"data": missing})
    for command in (["validate"], ["retest", "--run-dir", str(folder)]):
        result = runner.invoke(app, [command[0], str(spec), *command[1:]])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert "data.csv: file not found (retune.data.path)" in flat, flat


@pytest.mark.usefixtures("ray_instance")
def test_labels_the_champion_cannot_answer_with_make_it_stale(swept, tmp_path):
    """The same digits, their labels renamed ("digit-3"): the champion's configuration trains
    as well as ever, but the champion itself cannot label this data."""
    digits = load_digits()
    path = tmp_path / "renamed.npz"
    np.savez(path, pixel=digits.data, label=[f"digit-{y}" for y in digits.target])
    renamed = {"source": "npz", "path": str(path), "target": "label"}
    spec, folder = copy_of(swept, tmp_path, retune={"data": renamed})
    result = runner.invoke(app, ["retest", str(spec), "--run-dir", str(folder), "--json"])
    assert result.exit_code == 3, result.output
    (reason,) = json.loads(result.stdout)["reasons"]
    assert reason == (
        "the data changed: its classes changed: new 'digit-0', 'digit-1', 'digit-2', "
        "'digit-3', 'digit-4', ... (10 in all); gone '0', '1', '2', '3', '4', ... (10 in all)"
    )


def test_retune_section_is_validated(tmp_path):
    spec = write_spec(tmp_path, spec_dict(retune={"schedule": "every monday"}))
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert "retune.schedule: not a cron expression" in result.output
    yaml.safe_load(spec.read_text())  # the file itself stays readable


def test_a_retune_packs_as_its_sweep_did(tmp_path):
    stages = [{**stage, "shape_per_pack": True} for stage in TWO_STAGES]
    changes = {"stages": stages, "parallel": {"trials": 2, "pack": 4}}
    spec = load_spec(write_spec(tmp_path, spec_dict(**changes)))
    warm, explore, fine = retune_stages(spec, epochs=4, warm=[{"lr": 0.01, "momentum": 0.9}])
    assert not warm.shape_per_pack, "queued configurations keep their own shapes"
    assert explore.shape_per_pack and fine.shape_per_pack


def _age(client, days: float) -> None:
    """Make the champion look `days` old (as if promoted, or last re-based, back then)."""
    version = client.get_model_version_by_alias("tiny", "champion")
    then = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    for tag in ("promoted_at", "rebased_at"):
        client.set_model_version_tag("tiny", version.version, tag, then)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_a_champion_stale_by_age_is_kept_re_based_and_then_fresh(swept, tmp_path):
    from mlflow import MlflowClient

    spec, folder = copy_of(swept, tmp_path, retune={"trials": 2, "explore": 0.5})
    where = ["--run-dir", str(folder)]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    _age(client, 40)
    old = runner.invoke(app, ["retest", str(spec), *where, "--json"])
    assert old.exit_code == 3 and "days old" in json.loads(old.stdout)["reasons"][0]

    kept = json.loads(runner.invoke(app, ["retune", str(spec), *where, "--json"]).stdout)
    assert kept["replaced"] is False, "same data: no challenger beats it beyond the noise"
    version = client.get_model_version_by_alias("tiny", "champion")
    assert "rebased_at" in version.tags and json.loads(version.tags["reference"])["seeds"]
    again = runner.invoke(app, ["retest", str(spec), *where, "--json"])
    assert again.exit_code == 0, again.output  # re-based: fresh, and young again
    assert json.loads(again.stdout)["retest"]["drop"] == pytest.approx(0.0, abs=1e-9)

    rerun = json.loads(runner.invoke(app, ["retune", str(spec), *where, "--json"]).stdout)
    assert rerun["retune"] == kept["retune"], "no new verdict: the same re-tune, continued"
    _age(client, 40)
    assert runner.invoke(app, ["retest", str(spec), *where, "--json"]).exit_code == 3
    newer = json.loads(runner.invoke(app, ["retune", str(spec), *where, "--json"]).stdout)
    assert newer["retune"] != kept["retune"], "a new stale verdict starts a new re-tune"
