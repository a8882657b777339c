from pathlib import Path

import pytest

from caviar.sweeps.errors import SpecError
from caviar.sweeps.search.specfile import load_spec
from tests.conftest import spec_dict, write_spec

SPECS = Path(__file__).resolve().parents[3] / "sweeps" / "specs"


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_shipped_specs_are_valid(name):
    spec = load_spec(SPECS / name)
    assert spec.stages and spec.space


def test_configs_put_searched_values_into_model_and_train(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    model, train = spec.configs({"lr": 0.3, "hidden_units": 7}, epochs=9)
    assert (model.hidden_units, train.lr, train.epochs) == (7, 0.3, 9)
    assert train.batch_size == 64  # from the spec's train section


def _error(tmp_path, spec) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, spec))
    return str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        (
            {"stages": [{"name": "s", "trials": 0}]},
            "stages[0].trials",
            "greater than or equal to 1",
        ),
        (
            {"stages": [{"name": "s", "trials": 2, "sampler": "bayes"}]},
            "stages[0].sampler",
            "'random'",
        ),
        ({"train": {"epochs": 4, "lr_rate": 0.1}}, "train.lr_rate", "unknown field"),
        (
            {"space": {"lr": {"scale": "log", "low": 0, "high": 1}}},
            "space.lr.low",
            "greater than 0",
        ),
        (
            {"space": {"learning_rate": {"scale": "log", "low": 0.1, "high": 1}}},
            "space.learning_rate",
            "unknown hyperparameter",
        ),
        (
            {"space": {"momentum": {"scale": "linear", "low": 0.5, "high": 1.5}}},
            "space.momentum",
            "1.5 is not a valid momentum",
        ),
        (
            {"space": {"hidden_units": {"scale": "int", "low": 1.5, "high": 8}}},
            "space.hidden_units.low",
            "valid integer",
        ),
        (  # a float scale on an integer field: every trial would crash in the driver
            {"space": {"hidden_units": {"scale": "log", "low": 32, "high": 512}}},
            "space.hidden_units",
            "whole number; use `scale: int`",
        ),
        (
            {"space": {"optimizer": {"scale": "linear", "low": 0, "high": 1}}},
            "space.optimizer",
            "list its values as `choices`",
        ),
        (
            {"stages": [{"name": "s", "trials": 2, "enqueue": [{"lr": 5.0}]}]},
            "stages[0].enqueue[0].lr",
            "outside space.lr [0.0001, 1.0]",
        ),
        (
            {"stages": [{"name": "s", "trials": 2, "enqueue": [{"lr": "fast"}]}]},
            "stages[0].enqueue[0].lr",
            "'fast' is outside",
        ),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"seed": 2**40}, "seed", "less than or equal to 2147483647"),
        ({"train": {"seed": -3}}, "train.seed", "greater than or equal to 0"),
        (
            {
                "stages": [
                    {"name": "s", "trials": 4, "pruner": {"kind": "median", "warmup_epochs": 3}}
                ]
            },
            "stages[0].pruner.warmup_epochs",
            "no epoch at which a trial of 4 epochs could be pruned",
        ),
        (
            {
                "stages": [
                    {
                        "name": "s",
                        "trials": 4,
                        "epochs": 3,
                        "pruner": {"kind": "hyperband", "min_epochs": 3},
                    }
                ]
            },
            "stages[0].pruner.min_epochs",
            "not below the stage's 3 epochs",
        ),
        ({"experiment": "../elsewhere"}, "experiment", "should match pattern"),
        ({"registered_model": "it's"}, "registered_model", "should match pattern"),
        ({"retune": {"schedule": "0 3 1 * 1"}}, "retune.schedule", "both set"),
        (
            {"data": {"source": "digits", "test_fraction": 0}},
            "data.test_fraction",
            "greater than 0",
        ),
        (
            {"data": {"source": "mnist1d", "samples": 10}},
            "data.samples",
            "greater than or equal to 100",
        ),
        ({"data": {"source": "imagenet"}}, "data", "mnist1d"),
        (
            {"stages": [{"name": "s", "trials": 4, "shape_per_pack": True}]},
            "stages[0].shape_per_pack",
            "set parallel.pack to 2 or more",
        ),
        (
            {
                "model": {"family": "cnn1d", "channels": 4, "blocks": 1, "dropout": 0.2},
                "stages": [{"name": "s", "trials": 4, "shape_per_pack": True}],
                "parallel": {"pack": 4},
            },
            "stages[0].shape_per_pack",
            "dropout",
        ),
        (
            {
                "stages": [{"name": "s", "trials": 4, "sampler": "grid", "shape_per_pack": True}],
                "parallel": {"pack": 4},
            },
            "stages[0].shape_per_pack",
            "grid stage",
        ),
        (
            {"objective": {"metric": "val_loss", "direction": "maximize"}},
            "objective",
            "should be minimize",
        ),
    ],
)
def test_errors_name_file_field_and_expectation(tmp_path, changes, field, expected):
    message = _error(tmp_path, spec_dict(**changes))
    assert message.startswith(f"{tmp_path / 'spec.yaml'}: {field}")
    assert expected in message


def test_missing_field_and_duplicate_stage_names(tmp_path):
    spec = spec_dict(stages=[{"name": "a", "trials": 1}, {"name": "a", "trials": 1}])
    assert "names must be distinct" in _error(tmp_path, spec)
    del spec["space"]
    assert "space: required field is missing" in _error(tmp_path, spec)


def test_a_spec_that_is_not_utf8_text_is_named(tmp_path):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\x00\x01")
    with pytest.raises(SpecError, match=r"model\.yaml: byte 8 is not UTF-8 text"):
        load_spec(binary)


def test_unreadable_files(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {lr: [1, 2\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_spec(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(listing)


def test_relative_data_path_is_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = spec_dict(data={"source": "csv", "path": "table.csv", "target": "y"})
    loaded = load_spec(write_spec(tmp_path / "sub", spec))
    assert loaded.data.path == (tmp_path / "sub" / "table.csv").resolve()


def test_fingerprint_ignores_budget_but_not_space(tmp_path):
    base = load_spec(write_spec(tmp_path, spec_dict()))
    more = load_spec(write_spec(tmp_path, spec_dict(stages=[{"name": "search", "trials": 99}])))
    other = spec_dict()
    other["space"]["lr"]["high"] = 0.5
    changed = load_spec(write_spec(tmp_path, other))
    assert base.fingerprint() == more.fingerprint() != changed.fingerprint()


def test_fingerprint_survives_moving_the_folder(tmp_path):
    spec = spec_dict(data={"source": "csv", "path": "table.csv", "target": "y"})
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    here = load_spec(write_spec(tmp_path / "a", spec))
    there = load_spec(write_spec(tmp_path / "b", spec))
    assert here.data.path != there.data.path
    assert here.fingerprint() == there.fingerprint()
