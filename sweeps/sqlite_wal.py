"""SQLite stores (MLflow's local store, an SQLite study storage) in write-ahead-log mode.

With WAL and normal sync a commit no longer waits for the disk, readers (`caviar ui`,
`caviar status`) do not block the writer, and a crash still leaves a consistent database
(SQLite loses at most the last transactions on a power cut; the MLflow journal replays them).
`use_wal()` is called by whatever opens such a store, before it connects.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def use_wal() -> None:
    """Every SQLite connection SQLAlchemy opens from now on uses WAL and normal sync."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _wal(connection: Any, _record: Any) -> None:
        if type(connection).__module__.startswith("sqlite3"):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
