"""One driver per sweep wherever its drivers run: a lease kept in the study storage itself.

The run directory's file lock only sees drivers sharing that directory. Drivers on other
machines, or with other run directories, that share a study storage (PostgreSQL, as the
cluster set-up recommends) meet here instead: the storage holds one lease per sweep, with
its holder and an expiry the holder pushes forward every few seconds. A second driver is
refused while the lease is live; a holder that died stops renewing and its lease expires
(at once when it ran on this machine and its process is gone).

SQL storages keep the leases in a table of their own (`caviar_leases`) in the same database
(`lease_sql`); the journal file keeps them in a folder next to it, changed under a file lock.
Taking or renewing a lease is a compare-and-set, so two drivers racing for it cannot both win.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from caviar.cluster.reaper import holder_gone
from caviar.sweeps.errors import SweepBusy
from caviar.sweeps.search.studies import JOURNAL

TTL_SECONDS = 30.0
RENEW_SECONDS = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    owner: str  # host:pid:nonce
    expires: float  # wall-clock seconds

    def live(self) -> bool:
        """Not expired, and (when it is on this machine) its process still exists."""
        return time.time() < self.expires and not holder_gone(self.owner)

    def describe(self) -> str:
        host, pid, _ = [*self.owner.split(":"), "?", "?", ""][:3]
        return f"driver pid {pid} on {host}"


class LeaseStore(Protocol):
    def read(self, sweep: str) -> Holder | None: ...

    def swap(self, sweep: str, old: Holder | None, new: Holder | None) -> bool:
        """Replace the lease `old` by `new` (None: no lease) if it is still `old`."""
        ...


class FileLeases:
    """Leases as small JSON files next to the journal, read and changed under a file lock."""

    def __init__(self, journal: Path) -> None:
        self._folder = journal.parent / f"{journal.name}.leases"

    def read(self, sweep: str) -> Holder | None:
        path = self._folder / f"{sweep}.json"
        try:
            fields = json.loads(path.read_text())
            return Holder(str(fields["owner"]), float(fields["expires"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def swap(self, sweep: str, old: Holder | None, new: Holder | None) -> bool:
        self._folder.mkdir(parents=True, exist_ok=True)
        with open(self._folder / f"{sweep}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.read(sweep) != old:
                return False
            path = self._folder / f"{sweep}.json"
            if new is None:
                path.unlink(missing_ok=True)
            else:
                temporary = path.with_suffix(".tmp")
                temporary.write_text(json.dumps(asdict(new)))
                os.replace(temporary, path)
            return True


def lease_store(storage_url: str) -> LeaseStore | None:
    """Where the sweep's lease lives for this storage; None for a storage without a place
    for it (a URL only Optuna understands), where the run directory's lock is all there is."""
    if storage_url.startswith(JOURNAL):
        return FileLeases(Path(storage_url.removeprefix(JOURNAL)))
    if "://" in storage_url:  # SQLAlchemy (0.2 s to import) only for a storage that needs it
        from caviar.sweeps.search.lease_sql import SqlLeases

        return SqlLeases(storage_url)
    return None


def refuse_if_leased(storage_url: str, sweep: str) -> None:
    """Raise `SweepBusy` now if a live driver holds the sweep's lease (writes nothing)."""
    store = _existing_store(storage_url)
    holder = store.read(sweep) if store is not None else None
    if holder is not None and holder.live():
        raise _busy(sweep, holder)


@contextmanager
def sweep_lease(
    storage_url: str, sweep: str, ttl: float = TTL_SECONDS, renew: float = RENEW_SECONDS
) -> Iterator[None]:
    """Hold the sweep's lease for the driver's lifetime, renewed in the background. If it
    is ever lost (this process stalled past `ttl` and another driver took over), the main
    thread is interrupted: two drivers must not write one sweep."""
    store = lease_store(storage_url)
    if store is None:
        yield
        return
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    held = _take(store, sweep, me, ttl)
    stop = threading.Event()
    keeper = threading.Thread(
        target=_keep, args=(store, sweep, held, ttl, renew, stop), daemon=True, name="lease"
    )
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        current = store.read(sweep)
        if current is not None and current.owner == me:
            store.swap(sweep, current, None)


def _take(store: LeaseStore, sweep: str, me: str, ttl: float) -> Holder:
    holder = store.read(sweep)
    if holder is not None and holder.live():
        raise _busy(sweep, holder)
    mine = Holder(me, time.time() + ttl)
    if not store.swap(sweep, holder, mine):
        raise _busy(sweep, store.read(sweep) or Holder("?:?:", 0.0))
    return mine


def _keep(
    store: LeaseStore, sweep: str, held: Holder, ttl: float, every: float, stop: threading.Event
) -> None:
    while not stop.wait(every):
        mine = Holder(held.owner, time.time() + ttl)
        try:
            if store.swap(sweep, held, mine):
                held = mine
                continue
        except Exception as exc:  # the database is briefly away: try again next time
            log.warning("could not renew the lease of sweep %s: %s", sweep, exc)
            continue
        log.error("sweep %s: its lease was taken by another driver; stopping", sweep)
        _thread.interrupt_main()
        return


def _existing_store(storage_url: str) -> LeaseStore | None:
    """The lease store, without creating a database file that is not there yet."""
    for scheme in (JOURNAL, "sqlite:///"):
        if storage_url.startswith(scheme) and not Path(storage_url.removeprefix(scheme)).exists():
            return None
    return lease_store(storage_url)


def _busy(sweep: str, holder: Holder) -> SweepBusy:
    return SweepBusy(
        f"sweep '{sweep}' is already running ({holder.describe()}, lease in the study "
        "storage); wait for it to finish or stop it first"
    )
