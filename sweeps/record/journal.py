"""The on-disk journal of MLflow operations waiting to be applied, in order.

`<spool>/ops.jsonl` holds one JSON operation per line; `<spool>/applied` counts how many of its
first lines have been applied; `<spool>/files/` keeps copies of folders waiting to be uploaded;
`<spool>/tracking_uri` names the server they are meant for. When everything is applied the
journal is removed, so a spool with no `ops.jsonl` has nothing waiting.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

Op = dict[str, Any]


class Journal:
    def __init__(self, spool_dir: Path, tracking_uri: str) -> None:
        self.spool_dir = spool_dir
        self.tracking_uri = tracking_uri
        self._ops = spool_dir / "ops.jsonl"
        self._applied = spool_dir / "applied"

    def append(self, op: Op) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        (self.spool_dir / "tracking_uri").write_text(self.tracking_uri)
        with open(self._ops, "a") as handle:
            handle.write(json.dumps(op) + "\n")

    def keep_files(self, folder: Path) -> Path:
        """A copy of `folder` that lives until its upload is applied."""
        copy = self.spool_dir / "files" / uuid.uuid4().hex
        shutil.copytree(folder, copy)
        return copy

    def load(self) -> list[Op]:
        """The operations not applied yet. The journal is rewritten with only those, so the
        applied counter starts from zero again."""
        if not self._ops.exists():
            return []
        ops = [json.loads(line) for line in self._ops.read_text().splitlines() if line.strip()]
        for op in ops:  # a journaled create may have reached the server: look before creating
            op["fresh"] = False
        done = int(self._applied.read_text()) if self._applied.exists() else 0
        left = ops[done:]
        self._ops.write_text("".join(json.dumps(op) + "\n" for op in left))
        self._applied.unlink(missing_ok=True)
        return left

    def mark_applied(self, count: int, caught_up: bool) -> None:
        """`count` operations of the journal are applied; `caught_up`: all of them."""
        if not caught_up:
            self._applied.write_text(str(count))
            return
        for path in (self._ops, self._applied, self.spool_dir / "tracking_uri"):
            path.unlink(missing_ok=True)

    @staticmethod
    def spooled_for(spool_dir: Path) -> str | None:
        """The tracking URI that operations waiting in `spool_dir` are meant for, if any wait."""
        if not (spool_dir / "ops.jsonl").exists():
            return None
        target = spool_dir / "tracking_uri"
        return target.read_text().strip() if target.exists() else None
