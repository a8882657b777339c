"""Generated data sets, kept on disk: a source whose samples follow from its config alone
(MNIST-1D's generator, scikit-learn's digits) is made once and read back in milliseconds.

The cache is a folder of NumPy archives, one per (source, settings, generator version), in
`$CAVIAR_CACHE` or `$XDG_CACHE_HOME/caviar/data` (default `~/.cache/caviar/data`); deleting
it is always safe. Split settings are not part of the key: one generated table serves every
split. A file a user brings is never cached (it can change under the same name).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from caviar.models.data import SourceConfig, Table

SPLIT_FIELDS = {"val_fraction", "test_fraction", "split_seed"}


def cache_folder() -> Path:
    if os.environ.get("CAVIAR_CACHE"):
        return Path(os.environ["CAVIAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "caviar" / "data"


def cached_table(spec: SourceConfig, version: str, make: Callable[[], Table]) -> Table:
    """The table `make()` returns for `spec`, from the cache when it was made before with the
    same settings and generator `version`; stored after making it otherwise."""
    settings = spec.model_dump(mode="json", exclude=SPLIT_FIELDS)
    key = json.dumps({"settings": settings, "version": version}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_folder() / f"{spec.source}-{digest}.npz"
    try:
        return _read(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent or torn
        pass
    table = make()
    with contextlib.suppress(OSError):  # a read-only home: run without the cache
        _write(path, table)
    return table


def data_file(spec: SourceConfig) -> dict[str, str] | None:
    """The file a source reads, by name and a hash of its contents: what a started sweep's
    trials were scored on (None for generated data, or a file not there)."""
    path = getattr(spec, "path", None)
    if not isinstance(path, Path) or not path.is_file():
        return None
    stat = path.stat()
    return {
        "name": path.name,
        "sha256": _contents_digest(str(path), stat.st_size, stat.st_mtime_ns),
    }


@functools.lru_cache(maxsize=64)
def _contents_digest(path: str, size: int, mtime_ns: int) -> str:
    """Once per version of the file (its size and modification time name it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read(path: Path) -> Table:
    with np.load(path, allow_pickle=False) as saved:
        return Table(
            saved["x"],
            saved["labels"],
            tuple(str(name) for name in saved["features"]),
            tuple(str(kind) for kind in saved["feature_types"]),
        )


def _write(path: Path, table: Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, x=table.x, labels=table.labels, features=np.array(table.features),
             feature_types=np.array(table.feature_types))  # fmt: skip
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)  # readers see a whole file or none
