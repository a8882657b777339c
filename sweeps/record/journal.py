"""The on-disk journal of MLflow operations waiting to be applied, in order.

`<spool>/ops.jsonl` holds one JSON operation per line; `<spool>/applied` counts how many of its
first lines have been applied (replaced atomically). Each append is written and flushed at once
(a killed driver loses nothing: the bytes are the kernel's) and fsynced at most every
`SYNC_SECONDS` (a power cut loses at most that much; the counter too, which only replays
operations that were applied already: replays are harmless);
`<spool>/files/` keeps copies of folders waiting to be uploaded; `<spool>/target.json` names
the tracking server and experiment they are meant for (written once per journal: it stays
while a writer that keeps up removes and starts its journal again, epoch after epoch). When
everything is applied the journal is removed, so a spool with no `ops.jsonl` has nothing
waiting. Operations the server rejected (4xx) are moved to `<spool>/dead-letter.jsonl` with
the reason: kept for a person, never blocking the writes after them.

A crash can leave a torn last line (the append was cut short: that operation never counted as
written) or an unreadable counter (then everything is replayed: replays are harmless).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caviar.models.errors import CaviarError

Op = dict[str, Any]
SYNC_SECONDS = 0.25


class Journal:
    def __init__(self, spool_dir: Path, tracking_uri: str, experiment: str) -> None:
        self.spool_dir = spool_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._ops = spool_dir / "ops.jsonl"
        self._applied = spool_dir / "applied"
        self._dead = spool_dir / "dead-letter.jsonl"
        self._target = spool_dir / "target.json"
        self._synced = 0.0  # when the journal was last fsynced
        self._counted = 0.0  # when the applied counter was last written
        self._targeted = False  # target.json written by this journal

    def append(self, op: Op) -> None:
        if not self._targeted:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            target = {"tracking_uri": self.tracking_uri, "experiment": self.experiment}
            _replace(self._target, json.dumps(target))
            self._targeted = True
        self._synced = _append_line(self._ops, json.dumps(op), self._synced)

    def keep_files(self, folder: Path) -> Path:
        """A copy of `folder` that lives until its upload is applied (its absolute path: the
        process that uploads it may work in another directory)."""
        copy = self.spool_dir.resolve() / "files" / uuid.uuid4().hex
        shutil.copytree(folder, copy)
        return copy

    def load(self) -> list[Op]:
        """The operations not applied yet. The journal is rewritten with only those, so the
        applied counter starts from zero again."""
        if not self._ops.exists():
            return []
        lines = [line for line in self._ops.read_text().splitlines() if line.strip()]
        ops = []
        for number, line in enumerate(lines, start=1):
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):  # only the last line can be torn by a crash
                    raise CaviarError(
                        f"{self._ops}: line {number} is not a journaled MLflow write; the "
                        "journal is damaged (move it away to start a new one)"
                    ) from None
        for op in ops:  # a journaled create may have reached the server: look before creating
            op["fresh"] = False
        left = ops[self._applied_count() :]
        _replace(self._ops, "".join(json.dumps(op) + "\n" for op in left))
        self._applied.unlink(missing_ok=True)
        return left

    def mark_applied(self, count: int, caught_up: bool) -> None:
        """`count` operations of the journal are applied; `caught_up`: all of them."""
        if not caught_up:
            if time.monotonic() - self._counted >= SYNC_SECONDS:
                _replace(self._applied, str(count))
                self._counted = time.monotonic()
            return
        for path in (self._ops, self._applied):  # the target stays: see the module's doc
            path.unlink(missing_ok=True)

    def dead_letter(self, op: Op, reason: str) -> None:
        """Set aside an operation the server refused, with why and when."""
        when = datetime.now(UTC).isoformat(timespec="seconds")
        _append_line(self._dead, json.dumps({"at": when, "reason": reason, "op": op}), 0.0)

    def dead_letters(self) -> list[dict[str, Any]]:
        return read_dead_letters(self.spool_dir)

    def _applied_count(self) -> int:
        try:
            return int(self._applied.read_text())
        except (FileNotFoundError, ValueError):
            return 0


def read_dead_letters(spool_dir: Path) -> list[dict[str, Any]]:
    """The operations a server refused, oldest first (`at`, `reason`, `op`)."""
    path = spool_dir / "dead-letter.jsonl"
    if not path.exists():
        return []
    letters = []
    for line in path.read_text().splitlines():
        try:
            letters.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return letters


def waiting(spool_dir: Path) -> int:
    """How many journaled operations wait in `spool_dir` (a read: nothing is changed)."""
    journal = spool_dir / "ops.jsonl"
    if not journal.exists():
        return 0
    lines = sum(1 for line in journal.read_text().splitlines() if line.strip())
    try:
        applied = int((spool_dir / "applied").read_text())
    except (FileNotFoundError, ValueError):
        applied = 0
    return max(0, lines - applied)


def spooled_target(spool_dir: Path) -> dict[str, str] | None:
    """The tracking server and experiment that operations waiting in `spool_dir` are meant
    for, if any wait."""
    if not (spool_dir / "ops.jsonl").exists():
        return None
    target = spool_dir / "target.json"
    try:
        return dict(json.loads(target.read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _append_line(path: Path, line: str, synced: float) -> float:
    """Append a line; fsync when `synced` (the last fsync) is `SYNC_SECONDS` old. Returns
    when the file was last fsynced."""
    with open(path, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        if time.monotonic() - synced >= SYNC_SECONDS:
            os.fsync(handle.fileno())
            synced = time.monotonic()
    return synced


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old or the new content, never half."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
