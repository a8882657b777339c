"""A new local MLflow store is copied from an empty one made once: it must be the store MLflow
would have made, and a store that exists is never touched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow.store.db.utils
import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from caviar.sweeps.record.store_template import seed_store, template_path


def _schema(path: Path) -> dict[str, list[str]]:
    """Each table's and index's definition, line by line in sorted order: MLflow's migrations
    do not always list a table's constraints in the same order."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    return {name: sorted(line.strip(" ,\t") for line in sql.splitlines()) for name, sql in rows}


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_a_new_store_is_the_one_mlflow_makes_without_its_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    made_by_mlflow = tmp_path / "mlflow-own.db"
    SqlAlchemyStore(f"sqlite:///{made_by_mlflow}", (tmp_path / "own").as_uri()).engine.dispose()

    seed_store(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")  # makes the template
    assert template_path().exists()

    def no_migrations(engine: object) -> None:
        raise AssertionError("the store was migrated, not copied")

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", no_migrations)
    store = tmp_path / "second" / "mlflow.db"
    seed_store(f"sqlite:///{store}")
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    run = client.create_run(client.create_experiment("e", (tmp_path / "art").as_uri()))
    client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=1)

    assert _schema(store) == _schema(made_by_mlflow)
    assert _revision(store) == _revision(made_by_mlflow)
    default = client.get_experiment("0")  # MLflow's own, with this store's artifact root
    assert default.name == "Default"
    assert str(tmp_path) not in default.artifact_location
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0.5]


def test_a_store_that_exists_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    kept = client.create_experiment("kept", (tmp_path / "art").as_uri())

    seed_store(f"sqlite:///{store}")

    assert client.get_experiment(kept).name == "kept"
    assert not template_path().exists()  # nothing to seed: no template was made either
    assert list(tmp_path.glob(".*partial")) == []


def test_a_store_with_connection_options_is_left_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    seed_store(f"sqlite:///{tmp_path / 'mlflow.db'}?timeout=10")
    assert list(tmp_path.iterdir()) == []  # no file named after the options, no template
