"""The built-in data sources: MNIST-1D and scikit-learn's digits (generated or shipped locally:
nothing is downloaded) and the user's own CSV, Parquet or NPZ files."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from caviar.models.cache import cached_table
from caviar.models.data import SourceConfig, Table, numeric_table
from caviar.models.errors import DataError
from caviar.models.plugins import Source


class Mnist1dSource(SourceConfig):
    """MNIST-1D, generated locally by the `mnist1d` package (nothing is downloaded)."""

    source: Literal["mnist1d"]
    samples: int = Field(
        5000, ge=100, le=10_000_000, description="Number of sequences generated (all splits)."
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Generator seed: same seed and knobs give the same data.",
    )
    noise: float = Field(0.25, ge=0, description="Correlated background noise scale.")
    iid_noise: float = Field(0.02, ge=0, description="Independent per-point noise scale.")
    shear: float = Field(0.75, ge=0, description="Shear scale.")
    translation: int = Field(
        48, ge=1, le=100_000, description="Maximum circular translation, in points."
    )
    scale: float = Field(0.4, ge=0, description="Amplitude scale jitter.")


class DigitsSource(SourceConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 64 features)."""

    source: Literal["digits"]


class FileSource(SourceConfig):
    """A table the user brings: CSV, Parquet or NPZ, with one column holding the class."""

    source: Literal["csv", "parquet", "npz"]
    path: Path = Field(description="The file; a relative path is relative to the spec's folder.")
    target: str = Field(description="Column (or NPZ array) holding the class labels.")


def _generate_mnist1d(spec: Mnist1dSource) -> Table:
    return cached_table(spec, _version("mnist1d"), lambda: _make_mnist1d(spec))


def _make_mnist1d(spec: Mnist1dSource) -> Table:
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
    return numeric_table(data["x"], data["y"], prefix="t")


def _load_digits(spec: DigitsSource) -> Table:
    return cached_table(spec, _version("scikit-learn"), lambda: _make_digits(spec))


def _make_digits(spec: DigitsSource) -> Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return numeric_table(digits.data, digits.target, prefix="pixel_")


def _version(package: str) -> str:
    return metadata.version(package)


def _read_table(spec: FileSource) -> Table:
    path = spec.path
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.path); expected a {spec.source} file")
    try:
        columns = _read_columns(path, spec.source)
    except Exception as exc:  # a parser's own error: name the file, keep its explanation
        reason = " ".join(str(exc).split())  # one line, however the parser wrapped it
        raise DataError(f"{path}: cannot be read as {spec.source}: {reason}") from None
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
    if len(labels) == 0:
        raise DataError(f"{path}: no rows, only column names; expected one row per sample")
    # The file's own column order: the champion takes its inputs in that order.
    blocks = [_feature_block(spec, name, columns[name], len(labels)) for name in columns]
    import pandas as pd  # loaded already: the file was read with it

    if bool(pd.isna(labels).any()):  # None, NaN and pandas' NA alike
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


FILES = Source(FileSource, _read_table)
BUILT_IN = {
    "mnist1d": Source(Mnist1dSource, _generate_mnist1d),
    "digits": Source(DigitsSource, _load_digits),
    "csv": FILES,
    "parquet": FILES,
    "npz": FILES,
}
