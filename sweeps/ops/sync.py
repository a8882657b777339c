"""`caviar sync`: send the MLflow writes that wait on disk, for every spool of a run directory.

Each spool belongs to one sweep (a re-tune is a sweep of its own) and names the tracking
server and experiment its writes are for. Each is sent under its sweep's lock, so it never
races that sweep's driver. Writes the server refuses are set aside and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from caviar.sweeps.record.journal import read_dead_letters, spooled_target
from caviar.sweeps.record.writer import MlflowWriter
from caviar.sweeps.search.lock import sweep_lock


@dataclass
class SpoolSync:
    sweep: str
    target: str | None  # the tracking URI, None when nothing waited
    sent: int = 0
    left: int = 0  # still waiting: the server is unreachable
    refused: list[str] = field(default_factory=list)  # set aside now or before (dead letters)


def sync_spools(run_dir: Path, sweep: str | None = None, tracking_uri: str | None = None) -> (
    list[SpoolSync]
):  # fmt: skip
    """Send what waits in each spool of `run_dir` (only `sweep`'s and its re-tunes' when
    given), to the server it was meant for or to `tracking_uri`."""
    root = run_dir / "spool"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
    if sweep is not None:
        folders = [p for p in folders if p.name == sweep or p.name.startswith(f"{sweep}.")]
    return [_sync_one(run_dir, folder, tracking_uri) for folder in folders]


def _sync_one(run_dir: Path, folder: Path, tracking_uri: str | None) -> SpoolSync:
    target = spooled_target(folder)
    earlier = [letter["reason"] for letter in read_dead_letters(folder)]
    if target is None:
        return SpoolSync(folder.name, None, refused=earlier)
    uri = tracking_uri or target["tracking_uri"]
    with sweep_lock(run_dir, folder.name):  # the sweep's driver is the only other writer
        writer = MlflowWriter(uri, target["experiment"], folder)
        waiting = writer.pending
        left = writer.sync()
        writer.refused()  # they are in the dead-letter file, read below with the earlier ones
    refused = [letter["reason"] for letter in read_dead_letters(folder)]
    return SpoolSync(folder.name, uri, sent=waiting - left, left=left, refused=refused)
