"""Bad input: a corpus of malformed specs and data files. Every one is refused by `caviar
validate` and `caviar sweep` with exit code 2, one line naming the file and the field, no
traceback, nothing written, in well under a second of caviar's own time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caviar.sweeps.views.cli import app

pytestmark = pytest.mark.chaos

BAD = Path(__file__).parents[1] / "data" / "bad"

# Spec file -> what its error must name (the field, or the place in the file).
SPECS = {
    "binary_file.yaml": "not UTF-8",
    "empty_choices.yaml": "space.activation.choices",
    "empty_file.yaml": "expected a mapping",
    "float_scale_on_int.yaml": "space.hidden_units",
    "huge_epochs.yaml": "train.epochs",
    "huge_trials.yaml": "stages[0].trials",
    "log1m_high_one.yaml": "space.momentum.high",
    "log_low_zero.yaml": "space.lr.low",
    "low_above_high.yaml": "space.lr",
    "missing_name.yaml": "name: required",
    "missing_space.yaml": "space: required",
    "name_with_slash.yaml": "name:",
    "negative_lr.yaml": "train.lr",
    "negative_seed.yaml": "seed:",
    "negative_timeout.yaml": "parallel.epoch_timeout",
    "no_stages.yaml": "stages:",
    "not_a_mapping.yaml": "expected a mapping",
    "not_utf8.yaml": "not UTF-8",
    "stage_names_repeat.yaml": "names must be distinct",
    "unknown_data_key.yaml": "data.shuffle",
    "unknown_metric.yaml": "objective.metric",
    "unknown_model_key.yaml": "model.dropout",
    "unknown_parallel_key.yaml": "parallel.nodes",
    "unknown_param_key.yaml": "space.lr.step",
    "unknown_pruner.yaml": "stages[0].pruner.kind",
    "unknown_pruner_key.yaml": "stages[0].pruner.patience",
    "unknown_sampler.yaml": "stages[0].sampler",
    "unknown_source.yaml": "data.source",
    "unknown_space_field.yaml": "space.learning_rat",
    "unknown_stage_key.yaml": "stages[0].budget",
    "unknown_top_key.yaml": "learning_rate",
    "unknown_train_key.yaml": "train.warmup",
    "wrong_type_epochs.yaml": "train.epochs",
    "yaml_syntax.yaml": "line 3",
    "zero_epochs.yaml": "train.epochs",
    "zero_parallel.yaml": "parallel.trials",
}

# Data file -> what its error must say (the column, or what is wrong with the file).
DATA = {
    "binary.csv": "cannot be read as csv",
    "empty.csv": "cannot be read as csv",
    "header_only.csv": "no rows",
    "inf_feature.csv": "column 'f1'",
    "na_label.parquet": "column 'label' has missing labels",  # pandas' string dtype, NA
    "nan_feature.csv": "column 'f2'",
    "non_numeric_feature.csv": "column 'f1'",
    "not_utf8.csv": "utf-8",
    "one_class.csv": "1 class",
    "pickled.npz": "cannot be read as npz",
    "ragged_rows.csv": "Expected 3 fields in line 8",
    "target_missing.csv": "no column 'label' (data.target)",
    "too_few_rows.csv": "data.test_fraction",
    "truncated.npz": "cannot be read as npz",
    "truncated.parquet": "cannot be read as parquet",
}

runner = CliRunner()


def refused(command: str, spec: Path, run_dir: Path) -> tuple[str, float]:
    args = [command, str(spec)] + (["--run-dir", str(run_dir)] if command == "sweep" else [])
    started = time.perf_counter()
    result = runner.invoke(app, args)
    seconds = time.perf_counter() - started
    assert result.exit_code == 2, f"{command} {spec.name}: exit {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    return result.output, seconds


def test_the_corpus_covers_every_kind_of_bad_file():
    assert sorted(p.name for p in (BAD / "specs").iterdir()) == sorted(SPECS)
    assert sorted(p.name for p in (BAD / "data").iterdir() if p.name != "ok.csv") == sorted(DATA)
    assert len(SPECS) >= 25 and len(DATA) >= 10


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("command", ["validate", "sweep"])
def test_a_malformed_spec_is_refused_naming_the_field(name, command, tmp_path):
    spec = tmp_path / name
    shutil.copy(BAD / "specs" / name, spec)
    output, seconds = refused(command, spec, tmp_path / "runs")
    assert name in output and SPECS[name] in output
    assert seconds < 1.0, f"{seconds:.2f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "nothing written"


def data_spec(folder: Path, name: str) -> Path:
    source = Path(name).suffix.lstrip(".")
    target = "y" if source == "npz" else "label"
    spec = folder / "spec.yaml"
    spec.write_text(
        "name: bad\n"
        f"data: {{source: {source}, path: {name}, target: {target}}}\n"
        "model: {hidden_units: 16, layers: 1}\n"
        "train: {epochs: 4, batch_size: 8}\n"
        "space:\n  lr: {scale: log, low: 1.0e-3, high: 1.0}\n"
        "stages:\n  - {name: search, trials: 2}\n"
    )
    return spec


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("command", ["validate", "sweep"])
def test_a_malformed_data_file_is_refused_naming_it(name, command, tmp_path):
    shutil.copy(BAD / "data" / name, tmp_path / name)
    spec = data_spec(tmp_path, name)
    output, seconds = refused(command, spec, tmp_path / "runs")
    flat = " ".join(output.split())  # rich wraps long lines for the terminal
    assert name in flat and DATA[name] in flat
    assert seconds < 1.0, f"{seconds:.2f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "spec.yaml"])


def test_the_good_file_of_the_corpus_passes(tmp_path):
    shutil.copy(BAD / "data" / "ok.csv", tmp_path / "ok.csv")
    result = runner.invoke(app, ["validate", str(data_spec(tmp_path, "ok.csv"))])
    assert result.exit_code == 0, result.output
