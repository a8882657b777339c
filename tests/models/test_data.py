import numpy as np
import pandas as pd
import pytest

from caviar.models.data import build_dataset
from caviar.models.errors import DataError
from caviar.models.sources import DigitsSource, FileSource, Mnist1dSource


def test_digits_split_is_deterministic_and_complete():
    first = build_dataset(DigitsSource(source="digits"))
    again = build_dataset(DigitsSource(source="digits"))
    assert len(first.y_train) + len(first.y_val) + len(first.y_test) == 1797
    assert len(first.y_val) == round(1797 * 0.2)
    assert np.array_equal(first.x_val, again.x_val)
    assert first.n_features == 64 and first.n_classes == 10


def test_other_split_seed_gives_other_split():
    a = build_dataset(DigitsSource(source="digits", split_seed=0))
    b = build_dataset(DigitsSource(source="digits", split_seed=1))
    assert not np.array_equal(a.y_val, b.y_val)


def test_inputs_are_normalised_with_training_statistics():
    data = build_dataset(DigitsSource(source="digits"))
    varying = data.x_train.std(axis=0) > 0
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=0)[varying], 1, atol=1e-4)
    # Validation rows are scaled with the training statistics, so they are not exactly standard.
    assert not np.allclose(data.x_val.mean(axis=0), 0, atol=1e-5)
    assert np.isfinite(data.x_train).all()  # constant pixels do not become NaN


def test_mnist1d_is_generated_locally_reproducibly_and_with_knobs():
    spec = Mnist1dSource(source="mnist1d", samples=500, seed=3)
    state = np.random.get_state()[1].copy()
    first = build_dataset(spec)
    assert np.array_equal(np.random.get_state()[1], state), "global NumPy RNG must be left alone"
    assert first.n_features == 40 and first.n_classes == 10
    assert np.array_equal(first.x_train, build_dataset(spec).x_train)
    noisier = build_dataset(spec.model_copy(update={"noise": 1.0}))
    assert not np.allclose(first.x_train, noisier.x_train)


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": rng.normal(size=60),
            "label": np.repeat(["cat", "dog", "eel"], 20),
        }
    )


@pytest.mark.parametrize("kind", ["csv", "parquet", "npz"])
def test_files_load_with_a_named_target(tmp_path, table, kind):
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        table.to_csv(path, index=False)
    elif kind == "parquet":
        table.to_parquet(path)
    else:
        np.savez(
            path,
            a=table["a"].to_numpy(),
            b=table["b"].to_numpy(),
            label=table["label"].to_numpy(dtype=str),
        )
    data = build_dataset(FileSource(source=kind, path=path, target="label"))
    assert data.classes == ("cat", "dog", "eel")
    assert data.n_features == 2
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 60


@pytest.mark.parametrize("kind", ["csv", "parquet", "npz"])
def test_features_keep_the_files_column_order_and_types(tmp_path, kind):
    rows = 40
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "zeta": rng.normal(100.0, 1.0, rows),
            "label": np.repeat(["b", "a"], rows // 2),
            "alpha": np.arange(rows),
            "mid": rng.normal(-5.0, 1.0, rows),
        }
    )
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "parquet":
        frame.to_parquet(path)
    else:
        arrays = {name: frame[name].to_numpy() for name in frame.columns}
        np.savez(path, **{**arrays, "label": frame["label"].to_numpy(dtype=str)})
    data = build_dataset(FileSource(source=kind, path=path, target="label", split_seed=3))
    assert data.features == ("zeta", "alpha", "mid")
    assert data.feature_types == ("float64", "int64", "float64")
    # Column j of the inputs is the file's j-th feature column: its training mean says so.
    assert data.mean[0] == pytest.approx(100.0, abs=1.0)
    assert data.mean[2] == pytest.approx(-5.0, abs=1.0)


def test_npz_feature_block(tmp_path):
    path = tmp_path / "block.npz"
    x = np.random.default_rng(0).normal(size=(50, 7))
    np.savez(path, x=x, y=np.arange(50) % 2)
    data = build_dataset(FileSource(source="npz", path=path, target="y"))
    assert data.n_features == 7
    assert data.features == tuple(f"x_{i}" for i in range(7))


def test_missing_target_names_file_and_columns(tmp_path, table):
    path = tmp_path / "data.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"data\.csv: no column 'class'.*\['a', 'b', 'label'\]"):
        build_dataset(FileSource(source="csv", path=path, target="class"))


def test_non_numeric_feature_is_named(tmp_path, table):
    path = tmp_path / "data.csv"
    table.assign(colour="red").to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'colour' is not numeric"):
        build_dataset(FileSource(source="csv", path=path, target="label"))


def test_missing_values_are_named(tmp_path, table):
    path = tmp_path / "data.csv"
    table.loc[3, "b"] = np.nan
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'b' has missing"):
        build_dataset(FileSource(source="csv", path=path, target="label"))


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        build_dataset(FileSource(source="csv", path=tmp_path / "nope.csv", target="y"))
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot be read as parquet"):
        build_dataset(FileSource(source="parquet", path=broken, target="y"))


def test_single_class_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"a": range(30), "y": 1}).to_csv(path, index=False)
    with pytest.raises(DataError, match="1 class"):
        build_dataset(FileSource(source="csv", path=path, target="y"))
