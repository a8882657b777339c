"""Sweep leases (`lease`) in a SQL study storage: rows of a table of their own."""

from __future__ import annotations

from dataclasses import asdict

import sqlalchemy as sa

from caviar.sweeps.search.lease import Holder


class SqlLeases:
    """Leases as rows of `caviar_leases` in the study's own database."""

    def __init__(self, url: str) -> None:
        self._engine = sa.create_engine(url)
        self._table = sa.Table(
            "caviar_leases",
            sa.MetaData(),
            sa.Column("sweep", sa.String(255), primary_key=True),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("expires", sa.Float, nullable=False),
        )
        self._table.create(self._engine, checkfirst=True)

    def read(self, sweep: str) -> Holder | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.select(self._table.c.owner, self._table.c.expires).where(
                    self._table.c.sweep == sweep
                )
            ).first()
        return Holder(row.owner, row.expires) if row is not None else None

    def swap(self, sweep: str, old: Holder | None, new: Holder | None) -> bool:
        table = self._table
        try:
            with self._engine.begin() as connection:
                if old is None and new is not None:
                    connection.execute(sa.insert(table).values(sweep=sweep, **asdict(new)))
                    return True
                assert old is not None
                where = (
                    (table.c.sweep == sweep)
                    & (table.c.owner == old.owner)
                    & (table.c.expires == old.expires)
                )
                if new is None:
                    return connection.execute(sa.delete(table).where(where)).rowcount == 1
                changed = connection.execute(sa.update(table).where(where).values(**asdict(new)))
                return changed.rowcount == 1
        except sa.exc.IntegrityError:  # another driver inserted it first
            return False
