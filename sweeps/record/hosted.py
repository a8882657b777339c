"""MLflow writes applied by another process than the sweep's driver.

A sweep's writer journals its operations and sends each to an `MlflowHost` in another
process: on the local cluster one the cluster keeps warm between sweeps (`caviar.cluster.
hosted`: the sweep does not import MLflow, 1.5 s of CPU taken from the trials while they
start), otherwise a child of the driver (`caviar.cluster.child_process`). Either way the
store's Python work (about 10 ms a trial on a local store) does not take the interpreter
lock from the driver's loop. The journal, the order and the outage handling stay the
writer's (`writer`, `applier`); only the application of each operation moves. The host
classifies a failure where MLflow is loaded and answers with the kind and the reason.

`call(method, *args)` reaches the host; it raises `ConnectionError` when the host is gone.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from caviar.sweeps.record.applier import refusal
from caviar.sweeps.record.journal import Op
from caviar.sweeps.record.store_template import seed_store, sqlite_file
from caviar.sweeps.record.writer import MlflowWriter, preload

if TYPE_CHECKING:
    from caviar.sweeps.record.operations import MlflowOperations
Call = Callable[..., Any]


class Host(Protocol):
    """Where an `MlflowHost` lives: a process of the local cluster (`caviar.cluster.hosted`)
    or a child of the driver (`caviar.cluster.child_process`)."""

    def __call__(self, method: str, *args: Any) -> Any: ...
    def start(self) -> None: ...  # build now, if not built yet (else at the first call)
    def restart(self) -> None: ...


Target = tuple[str, str, str | None]  # tracking URI, experiment, artifact location


class HostUnreachable(Exception):
    """The host could not reach the tracking server."""


class HostRefused(Exception):
    """The tracking server refused the operation; `reason` says why, as the server put it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MlflowHost:
    """Lives in the host process: MLflow operations for the writers of several sweeps."""

    def __init__(self) -> None:
        from caviar.sweeps.record import writer  # MLflow's quiet settings, set on import

        writer.quiet_http()
        from caviar.sweeps.record import operations  # MLflow is loaded here, once

        for name in ("mlflow", "alembic"):  # Ray shows the host's log in the sweep's terminal
            logging.getLogger(name).setLevel(logging.WARNING)

        self._operations = operations
        self._lock = threading.Lock()
        self._writers: dict[str, MlflowOperations] = {}
        self._stores: dict[str, tuple[int, int]] = {}  # SQLite file -> (device, inode) opened

    def open(self, target: Target) -> bool:
        """Whether this process can write to `target`. False when its SQLite file was
        removed or replaced since this process opened it (MLflow keeps the old one open:
        writes would go nowhere); then a fresh host is needed."""
        path = sqlite_file(
            target[0]
        )  # as written: resolving it would use this process's working directory, not the sweep's
        if path is None or path not in self._stores:
            return True
        return _identity(path) == self._stores[path]

    def apply(self, writer: str, target: Target, op: Op) -> tuple[str, str] | None:
        """Apply `op` for `writer`; None when done, else ("unreachable" | "refused", why)."""
        operations = self._for(writer, target)
        try:
            operations.apply(op)
        except Exception as exc:
            if operations.unreachable(exc):
                return "unreachable", " ".join(str(exc).split())
            if operations.rejected(exc):
                return "refused", refusal(exc)
            raise
        path = sqlite_file(target[0])
        if path is not None and path not in self._stores and os.path.exists(path):
            self._stores[path] = _identity(path)
        return None

    def _for(self, writer: str, target: Target) -> MlflowOperations:
        with self._lock:
            if writer not in self._writers:
                seed_store(target[0])
                client = self._operations.MlflowClient(tracking_uri=target[0])
                self._writers[writer] = self._operations.MlflowOperations(
                    client, target[1], target[2]
                )
            return self._writers[writer]


def loaded_host(tracking_uri: str) -> MlflowHost:
    """An `MlflowHost` with the store module for `tracking_uri` imported too: what a sweep's
    child process builds (`caviar.cluster.child_process`)."""
    preload(tracking_uri)
    return MlflowHost()


def hosted_writer(
    host: Host, tracking_uri: str, experiment: str, spool: Path, artifacts: str | None,
    hold_seconds: float = 0.0,
) -> MlflowWriter:  # fmt: skip
    """A sweep's background writer whose operations `host` applies (after `hold_seconds` or
    its `release()`, see `MlflowWriter`)."""
    target = (tracking_uri, experiment, artifacts)
    return MlflowWriter(
        tracking_uri, experiment, spool, artifacts, background=True,
        operations=lambda: HostedOperations(host, host.restart, target),
        hold_seconds=hold_seconds,
    )  # fmt: skip


class HostedOperations:
    """`MlflowOperations` as the applier uses them, applied by an `MlflowHost`."""

    def __init__(self, call: Call, restart: Callable[[], None], target: Target) -> None:
        self._call = call
        self._restart = restart
        self._target = target
        self._writer = uuid.uuid4().hex
        self._opened = False

    def apply(self, op: Op) -> None:
        if not self._opened:  # here, a host that is gone counts as an outage like any other
            if not self._call("open", self._target):
                self._restart()  # the store was replaced under it: a new process opens the new one
            self._opened = True
        sent = dict(op)
        op.pop("fresh", None)  # as `MlflowOperations` does: a retry looks for the run first
        answer = self._call("apply", self._writer, self._target, sent)
        if answer is None:
            return
        kind, reason = answer
        raise HostUnreachable(reason) if kind == "unreachable" else HostRefused(reason)

    @staticmethod
    def unreachable(exc: Exception) -> bool:
        return isinstance(exc, HostUnreachable | ConnectionError)

    @staticmethod
    def rejected(exc: Exception) -> bool:
        return isinstance(exc, HostRefused)


def _identity(path: str) -> tuple[int, int]:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return found.st_dev, found.st_ino
