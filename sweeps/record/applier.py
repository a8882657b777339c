"""Journaled MLflow operations applied in order, from whichever thread asks.

The head of the queue is applied first. One the server refuses (a 4xx) is set aside in the
journal's dead-letter file with the reason and the queue moves on; one it cannot take now
(unreachable, 5xx) stops the queue with `Unreachable`, and stays first.

A backlog goes out in batches (`batches`): each run's writes in order, merged, the runs side
by side against a tracking server (one after another on a local store, which takes one writer
at a time). A batch that fails for any reason but an outage is sent again operation by
operation, so only the operation the server refuses is set aside; an operation sent twice
lands once (runs are found by their key, metrics and params are idempotent).
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from caviar.sweeps.record.batches import WINDOW, by_run, head_batch
from caviar.sweeps.record.journal import Journal, Op

if TYPE_CHECKING:
    from caviar.sweeps.record.operations import MlflowOperations


class Unreachable(Exception):
    """The tracking server cannot take writes now; the operation stays queued."""


class Applier:
    def __init__(
        self, journal: Journal, operations: Callable[[], MlflowOperations], side_by_side: int = 1
    ) -> None:
        """`operations` makes the MLflow client when the first operation is applied (loading
        MLflow and opening its store take seconds: a sweep does not wait for them);
        `side_by_side`: requests sent at once for different runs (1: one at a time)."""
        self.journal = journal
        self.side_by_side = side_by_side
        self._pool = (
            ThreadPoolExecutor(side_by_side, "mlflow-request") if side_by_side > 1 else None
        )
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
        """Apply the first waiting operation (with the metric writes behind it, merged); False
        when none waits. Raises `Unreachable`."""
        with self.lock:
            if not self.ops:
                return False
            op = self.ops[0]
            window = list(itertools.islice(self.ops, WINDOW))
        operations = self.operations
        batch = head_batch(window, across_runs=self._pool is not None)
        if len(batch) > 1 and self._apply_batch(operations, batch):
            self._done(len(batch))
            for done in batch:
                if done["op"] == "artifacts":
                    shutil.rmtree(done["dir"], ignore_errors=True)
            return True
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

    def _apply_batch(self, operations: MlflowOperations, batch: list[Op]) -> bool:
        """Apply `batch` run by run; False when it must go one operation at a time."""

        def apply_run(sequence: list[Op]) -> None:
            for op in sequence:
                operations.apply(op)

        try:
            runs = by_run(batch)
            if self._pool is None:
                for sequence in runs:
                    apply_run(sequence)
            else:
                list(self._pool.map(apply_run, runs))  # raises the first failure
        except Exception as exc:
            if operations.unreachable(exc):
                raise Unreachable(str(exc)) from exc
            return False
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
        reason = refusal(exc)
        self.journal.dead_letter(op, reason)
        with self.lock:
            self.refused.append(f"MLflow refused {op['op']} ({reason})")

    def _done(self, count: int = 1) -> None:
        with self.lock:
            for _ in range(count):
                self.ops.popleft()
            self._applied += count
            self.journal.mark_applied(self._applied, caught_up=not self.ops)
            if not self.ops:  # all caught up: the journal starts afresh
                self._applied = 0
            self.lock.notify_all()


def refusal(exc: Exception) -> str:
    """Why the server refused a write, on one line, in its own words."""
    if isinstance(getattr(exc, "reason", None), str):  # told by another process already
        return exc.reason  # type: ignore[attr-defined]
    text = " ".join(str(exc).split())
    status = getattr(exc, "get_http_status_code", None)
    return f"HTTP {status()} {text}" if callable(status) else f"{type(exc).__name__}: {text}"
