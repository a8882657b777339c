"""Data sets: generate or load, split deterministically, normalise with training statistics.

A data set is built once per sweep (by the driver) and handed to every trial, so everything
here runs on the driver side of the wire and returns plain NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from caviar.models.errors import DataError


class _Split(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of samples for validation.")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of samples held out for test (the champion's score)."
    )
    split_seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of the shuffle that assigns samples to splits."
    )

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> _Split:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 10% for training, "
                f"but got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class Mnist1dSource(_Split):
    """MNIST-1D, generated locally by the `mnist1d` package (nothing is downloaded)."""

    source: Literal["mnist1d"]
    samples: int = Field(5000, ge=100, description="Number of sequences generated (all splits).")
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Generator seed: same seed and knobs give the same data.",
    )
    noise: float = Field(0.25, ge=0, description="Correlated background noise scale.")
    iid_noise: float = Field(0.02, ge=0, description="Independent per-point noise scale.")
    shear: float = Field(0.75, ge=0, description="Shear scale.")
    translation: int = Field(48, ge=1, description="Maximum circular translation, in points.")
    scale: float = Field(0.4, ge=0, description="Amplitude scale jitter.")


class DigitsSource(_Split):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 64 features)."""

    source: Literal["digits"]


class FileSource(_Split):
    """A table the user brings: CSV, Parquet or NPZ, with one column holding the class."""

    source: Literal["csv", "parquet", "npz"]
    path: Path = Field(description="The file; a relative path is relative to the spec's folder.")
    target: str = Field(description="Column (or NPZ array) holding the class labels.")


DataSpec = Annotated[Mnist1dSource | DigitsSource | FileSource, Field(discriminator="source")]


@dataclass(frozen=True)
class Table:
    """Samples as read: float64 inputs (n, k) with each column's name and original dtype, in
    the order of the source (a file's columns, an NPZ file's arrays), and one label per row."""

    x: np.ndarray
    labels: np.ndarray
    features: tuple[str, ...]
    feature_types: tuple[str, ...]  # NumPy dtype names: int64, float64, bool, ...


@dataclass(frozen=True)
class Dataset:
    """Normalised splits. Inputs are float32 (n, features); labels int64 class indices.
    `mean` and `std` are the training statistics the inputs were scaled with; `features` and
    `feature_types` name the input columns, in the source's order."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    features: tuple[str, ...]
    feature_types: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Inputs as they were before scaling (what a deployed model receives)."""
        return (x * self.std + self.mean).astype(np.float32)


def build_dataset(spec: Mnist1dSource | DigitsSource | FileSource) -> Dataset:
    """Generate or load `spec`'s samples, split them and normalise them; raises `DataError`."""
    if isinstance(spec, Mnist1dSource):
        table = _generate_mnist1d(spec)
    elif isinstance(spec, DigitsSource):
        table = _load_digits()
    else:
        table = _read_table(spec)
    return split_and_normalise(table, spec, origin=_origin(spec))


def split_and_normalise(table: Table, split: _Split, origin: str = "data") -> Dataset:
    """Shuffle with `split.split_seed`, cut into train/val/test, scale by training statistics."""
    x = table.x
    classes, y = np.unique(table.labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{origin}: the target has {len(classes)} class(es); expected at least 2")
    n = len(y)
    n_val = round(n * split.val_fraction)
    n_test = round(n * split.test_fraction)
    n_train = n - n_val - n_test
    if n_train < 2 or n_val < 1 or n_test < 2:
        raise DataError(
            f"{origin}: {n} samples are too few to split into train/val/test "
            f"({split.val_fraction}/{split.test_fraction}); expected at least 2 test samples "
            "(data.test_fraction) and 1 validation sample"
        )
    order = np.random.default_rng(split.split_seed).permutation(n)
    train, val, test = np.split(order, [n_train, n_train + n_val])
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # a constant feature stays constant (zero) rather than becoming NaN

    def norm(rows: np.ndarray) -> np.ndarray:
        return ((x[rows] - mean) / std).astype(np.float32)

    return Dataset(
        x_train=norm(train),
        y_train=y[train].astype(np.int64),
        x_val=norm(val),
        y_val=y[val].astype(np.int64),
        x_test=norm(test),
        y_test=y[test].astype(np.int64),
        classes=tuple(str(c) for c in classes),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        features=table.features,
        feature_types=table.feature_types,
    )


def _origin(spec: Mnist1dSource | DigitsSource | FileSource) -> str:
    return str(spec.path) if isinstance(spec, FileSource) else spec.source


def _generate_mnist1d(spec: Mnist1dSource) -> Table:
    # make_dataset (not get_dataset, which downloads a pickle) builds the data from templates.
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.update(
        num_samples=spec.samples,
        seed=spec.seed,
        corr_noise_scale=spec.noise,
        iid_noise_scale=spec.iid_noise,
        shear_scale=spec.shear,
        max_translation=spec.translation,
        scale_coeff=spec.scale,
        train_split=1.0,  # caviar does its own three-way split
    )
    state = np.random.get_state()  # make_dataset reseeds NumPy's global generator
    try:
        data = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(state)
    return _numeric_table(np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"]), "t")


def _load_digits() -> Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _numeric_table(digits.data.astype(np.float64), digits.target, "pixel_")


def _numeric_table(x: np.ndarray, labels: np.ndarray, prefix: str) -> Table:
    """A generated data set's table: columns `<prefix>0`, `<prefix>1`, ... of floats."""
    names = tuple(f"{prefix}{i}" for i in range(x.shape[1]))
    return Table(x, labels, names, ("float64",) * len(names))


def _read_table(spec: FileSource) -> Table:
    path = spec.path
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.path); expected a {spec.source} file")
    try:
        columns = _read_columns(path, spec.source)
    except Exception as exc:  # a parser's own error: name the file, keep its explanation
        raise DataError(f"{path}: cannot be read as {spec.source}: {exc}") from None
    if spec.target not in columns:
        raise DataError(
            f"{path}: no column '{spec.target}' (data.target); expected one of {sorted(columns)}"
        )
    labels = np.asarray(columns.pop(spec.target))
    if labels.ndim != 1:
        raise DataError(
            f"{path}: '{spec.target}' has shape {labels.shape}; expected one label per row"
        )
    if not columns:
        raise DataError(
            f"{path}: only the target column '{spec.target}'; expected feature columns too"
        )
    # The file's own column order: the champion takes its inputs in that order.
    blocks = [_feature_block(spec, name, columns[name], len(labels)) for name in columns]
    if any(label is None or label != label for label in labels.tolist()):
        raise DataError(
            f"{path}: column '{spec.target}' has missing labels; expected a class per row"
        )
    return Table(
        np.concatenate([block for block, _, _ in blocks], axis=1),
        labels,
        tuple(name for _, names, _ in blocks for name in names),
        tuple(kind for block, _, kind in blocks for _ in range(block.shape[1])),
    )


def _feature_block(
    spec: FileSource, name: str, column: np.ndarray, rows: int
) -> tuple[np.ndarray, tuple[str, ...], str]:
    """One feature column (or NPZ block) as float64 (rows, k) with its column names (`name`,
    or `name_0`, `name_1`, ... for a block) and original dtype; or a `DataError` naming it."""
    values = np.asarray(column)
    if values.shape[0] != rows:
        raise DataError(
            f"{spec.path}: '{name}' has {values.shape[0]} rows but '{spec.target}' has "
            f"{rows}; expected equal lengths"
        )
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise DataError(
            f"{spec.path}: column '{name}' is not numeric ({values.dtype}); expected numbers"
        )
    block = values.reshape(values.shape[0], -1).astype(np.float64)
    if not np.isfinite(block).all():
        raise DataError(
            f"{spec.path}: column '{name}' has missing or infinite values; expected numbers"
        )
    names = (name,) if values.ndim == 1 else tuple(f"{name}_{i}" for i in range(block.shape[1]))
    return block, names, values.dtype.name


def _read_columns(path: Path, kind: str) -> dict[str, np.ndarray]:
    """Name -> values. NPZ arrays may be 1-D columns or 2-D blocks of features."""
    if kind == "npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    import pandas as pd

    frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    return {str(name): frame[name].to_numpy() for name in frame.columns}
