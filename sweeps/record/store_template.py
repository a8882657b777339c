"""A new local MLflow store starts as a copy of an empty one, made once per MLflow version.

MLflow gives a new SQLite store its tables by running every one of its schema migrations: about
0.8 s of CPU, at every new run directory, on the way to a sweep's first records (on two cores,
while the workers start). An empty store made once and kept in the cache folder
(`caviar.models.cache`), with no experiment in it, is copied in its place; MLflow then opens it
as a store of its own version (it checks the schema's revision) and adds its `Default`
experiment with this store's artifact location, as it does in a store it made itself.
Anything that goes wrong here leaves the store to MLflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from caviar.models.cache import cache_folder

SQLITE = "sqlite:///"


def sqlite_file(tracking_uri: str) -> str | None:
    """The SQLite file of an MLflow `tracking_uri`, as written (None for any other store)."""
    return tracking_uri.removeprefix(SQLITE) if tracking_uri.startswith(SQLITE) else None


def seed_store(tracking_uri: str) -> None:
    """Give the SQLite store at `tracking_uri`, if it does not exist yet, its empty tables
    from the template (made now if there is none); any other store is left alone."""
    file = sqlite_file(tracking_uri)
    if file is None or "?" in file or Path(file).exists():  # options: MLflow's own way
        return
    with contextlib.suppress(Exception):  # MLflow makes the store, as it would anyway
        _copy_if_absent(_template(), Path(file))


def template_path() -> Path:
    import mlflow

    return cache_folder() / f"mlflow-{mlflow.__version__}-empty.db"


def _template() -> Path:
    """The empty store for this MLflow version, made by MLflow itself the first time."""
    template = template_path()
    if template.exists():
        return template
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        made = Path(scratch) / "store.db"
        store = SqlAlchemyStore(f"{SQLITE}{made}", (Path(scratch) / "artifacts").as_uri())
        store.engine.dispose()
        partial = Path(scratch) / "template.db"
        with contextlib.closing(sqlite3.connect(made)) as source:
            source.execute("DELETE FROM experiments WHERE experiment_id = 0")  # MLflow's Default
            source.commit()
            with contextlib.closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)  # one file, whatever journal mode the store was opened in
                copy.execute("PRAGMA journal_mode=DELETE")
        partial.replace(template)  # readers see a whole file or none
    return template


def _copy_if_absent(template: Path, path: Path) -> None:
    """Copy `template` to `path` unless `path` appeared meanwhile (another process made the
    store and may have written to it: it is never replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        os.link(partial, path)  # fails if `path` exists
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)
