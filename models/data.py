"""Data sets: load a source (`caviar.models.sources` or a plugin's), split deterministically,
normalise with training statistics.

A data set is built once per sweep (by the driver) and handed to every trial, so everything
here runs on the driver side of the wire and returns plain NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from caviar.models.errors import DataError


class SourceConfig(BaseModel):
    """What every data source's config has: how its samples are split. A plugin source's
    config subclasses it and adds `source: Literal["<its name>"]` and its own fields."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Which source: mnist1d, digits, csv, parquet, npz, a plugin's.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of samples for validation.")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of samples held out for test (the champion's score)."
    )
    split_seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed of the shuffle that assigns samples to splits."
    )

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SourceConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "val_fraction + test_fraction must leave at least 10% for training, "
                f"but got {self.val_fraction} + {self.test_fraction}"
            )
        return self


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


def build_dataset(spec: SourceConfig) -> Dataset:
    """Load `spec`'s samples with its registered source, split and normalise them; raises
    `DataError`."""
    from caviar.models.plugins import source

    name = spec.source
    loaded = source(name).load(spec)
    if not isinstance(loaded, Table):
        x, labels = loaded
        loaded = numeric_table(x, labels, prefix="x")
    table = loaded
    return split_and_normalise(table, spec, origin=str(getattr(spec, "path", name)))


def numeric_table(x: Any, labels: Any, prefix: str) -> Table:
    """A table of float columns `<prefix>0`, `<prefix>1`, ... (generated data, plain arrays)."""
    x = np.asarray(x, dtype=np.float64)
    names = tuple(f"{prefix}{i}" for i in range(x.shape[1]))
    return Table(x, np.asarray(labels), names, ("float64",) * len(names))


def split_and_normalise(table: Table, split: SourceConfig, origin: str = "data") -> Dataset:
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
