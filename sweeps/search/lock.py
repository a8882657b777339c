"""One driver per sweep: an exclusive lock held for the driver's lifetime."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from caviar.sweeps.errors import SweepBusy


def refuse_if_busy(run_dir: Path, sweep: str) -> None:
    """Raise `SweepBusy` now if another driver holds the sweep's lock (writes nothing): a
    second driver is turned away before it starts Ray and its workers for nothing."""
    path = run_dir / "locks" / f"{sweep}.lock"
    try:
        handle = open(path)  # noqa: SIM115 - closed below, on every path
    except FileNotFoundError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(sweep, handle.read(), path) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def sweep_lock(run_dir: Path, sweep: str) -> Iterator[None]:
    """Hold an exclusive lock on the sweep for the driver's lifetime (released if it dies)."""
    lock_dir = run_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{sweep}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _busy(sweep, handle.read(), path) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _busy(sweep: str, owner: str, path: Path) -> SweepBusy:
    return SweepBusy(
        f"sweep '{sweep}' is already running (driver pid {owner.strip() or 'unknown'}, lock "
        f"{path}); wait for it to finish or stop it first"
    )
