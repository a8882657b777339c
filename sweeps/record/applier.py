"""Journaled MLflow operations applied in order, from whichever thread asks.

The head of the queue is applied first. One the server refuses (a 4xx) is set aside in the
journal's dead-letter file with the reason and the queue moves on; one it cannot take now
(unreachable, 5xx) stops the queue with `Unreachable`, and stays first.
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from caviar.sweeps.record.journal import Journal, Op

if TYPE_CHECKING:
    from caviar.sweeps.record.operations import MlflowOperations


class Unreachable(Exception):
    """The tracking server cannot take writes now; the operation stays queued."""


class Applier:
    def __init__(self, journal: Journal, operations: Callable[[], MlflowOperations]) -> None:
        """`operations` makes the MLflow client when the first operation is applied (loading
        MLflow and opening its store take seconds: a sweep does not wait for them)."""
        self.journal = journal
        self._make_operations = operations
        self._operations: MlflowOperations | None = None
        self.lock = threading.Condition()
        self.ops: deque[Op] = deque(journal.load())
        self.refused: list[str] = []  # why each dead-lettered operation was refused
        self._applied = 0  # operations of the journal applied so far

    @property
    def pending(self) -> int:
        with self.lock:
            return len(self.ops)

    def submit(self, op: Op) -> None:
        with self.lock:
            self.journal.append(op)
            self.ops.append(op)
            self.lock.notify_all()

    def apply_next(self) -> bool:
        """Apply the first waiting operation; False when none waits. Raises `Unreachable`."""
        with self.lock:
            if not self.ops:
                return False
            op = self.ops[0]
        operations = self.operations
        try:
            operations.apply(op)
        except Exception as exc:
            if operations.unreachable(exc):
                raise Unreachable(str(exc)) from exc
            if not operations.rejected(exc):
                raise
            self._refuse(op, exc)
        self._done()
        if op["op"] == "artifacts":  # only once it is recorded as applied
            shutil.rmtree(op["dir"], ignore_errors=True)
        return True

    @property
    def operations(self) -> MlflowOperations:
        if self._operations is None:
            self._operations = self._make_operations()
        return self._operations

    def sync(self) -> int:
        """Apply in this thread until nothing waits or the server is unreachable; returns how
        many operations still wait."""
        try:
            while self.apply_next():
                pass
        except Unreachable:
            pass
        return self.pending

    def _refuse(self, op: Op, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        self.journal.dead_letter(op, reason)
        with self.lock:
            self.refused.append(f"MLflow refused {op['op']} ({reason})")

    def _done(self) -> None:
        with self.lock:
            self.ops.popleft()
            self._applied += 1
            self.journal.mark_applied(self._applied, caught_up=not self.ops)
            if not self.ops:  # all caught up: the journal starts afresh
                self._applied = 0
            self.lock.notify_all()
