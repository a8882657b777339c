"""Every MLflow write of a sweep, journaled on disk, then applied in order by one thread.

Writes are small operations (create a run, log a batch, set a status, upload a folder, register
a model) on runs named by keys that caviar chooses (see `operations`). Each operation is first
appended to the journal (`journal`), then applied by a background thread, so the sweep never
waits for MLflow (in a sweep, that thread hands each operation to another process, which
applies it: `hosted`). When the tracking server cannot be reached, the thread keeps the operation
and everything after it and retries every `retry_seconds`; what is still waiting when the sweep
ends stays in the journal, and `caviar sync` (or the next sweep of the same name) sends it. A
write the server refuses is set aside with its reason (`applier`) and never holds up the rest.
A driver killed mid-write loses nothing either: the journal is replayed at the next start (a
replayed write is harmless — creates look up the key, metrics with the same step and time are
not stored twice).
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caviar.sweeps.record.applier import Applier, Unreachable
from caviar.sweeps.record.journal import Journal, Op

if TYPE_CHECKING:
    from caviar.sweeps.record.operations import MlflowOperations

# A driver's terminal is for progress, not for MLflow's per-run links and download bars.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def is_server(tracking_uri: str) -> bool:
    """A tracking server (HTTP), as opposed to a store MLflow opens itself."""
    return tracking_uri.startswith(("http://", "https://"))


def quiet_http() -> None:
    """One short attempt per request to a tracking server: the journal, not a blocking retry
    loop, covers an outage. Users may still set their own values."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def preload(tracking_uri: str) -> None:
    """Import MLflow and the store module for `tracking_uri` (about 1.5 s of CPU), with no
    write: what a sweep's MLflow child does as it starts, before the first write reaches it."""
    store = "rest_store" if is_server(tracking_uri) else "sqlalchemy_store"
    importlib.import_module("mlflow")
    importlib.import_module(f"mlflow.store.tracking.{store}")


def loaded_here(tracking_uri: str, experiment: str,
                artifact_location: str | None) -> MlflowOperations:  # fmt: skip
    """MLflow loaded in this process, by whichever thread applies first."""
    from mlflow import MlflowClient

    from caviar.sweeps.record.operations import MlflowOperations
    from caviar.sweeps.record.store_template import seed_store

    seed_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    return MlflowOperations(client, experiment, artifact_location)


class MlflowWriter:
    """Applies one experiment's MLflow operations in order, from a journal on disk.

    With `background=True` a thread applies them while the caller goes on; otherwise each call
    applies what it can before returning (used by `caviar sync` and one-off records).
    `operations` makes what applies them (default: MLflow loaded in this process; see
    `hosted` for another process that keeps it loaded). With `hold_seconds`, the thread
    applies nothing for that long, or until `release()` or a drain (`record.processes`)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        spool_dir: Path,
        artifact_location: str | None = None,
        retry_seconds: float = 10.0,
        background: bool = False,
        operations: Callable[[], Any] | None = None,
        hold_seconds: float = 0.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        remote = is_server(tracking_uri)
        if remote:
            quiet_http()
        self.journal = Journal(spool_dir, tracking_uri, experiment)
        # A tracking server takes requests for different runs at once; a local store one.
        self.applier = Applier(
            self.journal,
            operations
            or functools.partial(loaded_here, tracking_uri, experiment, artifact_location),
            side_by_side=4 if remote else 1,
        )
        self.retry_seconds = retry_seconds
        self.seconds = 0.0  # time callers spent waiting on this writer
        self._lock = self.applier.lock
        self._waiting_for_server = False
        self._attempts = 0  # applications tried by the background thread
        self._error: BaseException | None = None
        self._stopping = False
        self._held_until = time.monotonic() + hold_seconds
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
            self._thread.start()

    def create_run(
        self, key: str, name: str, tags: dict[str, str], parent: str | None = None,
        fresh: bool = False,
    ) -> None:  # fmt: skip
        """Create the run `key` unless it exists; `parent` is the key of its parent run.
        `fresh`: the key was just made up, so its first attempt need not look for it."""
        self._submit(
            {"op": "create_run", "key": key, "name": name, "tags": tags, "parent": parent,
             "fresh": fresh}
        )  # fmt: skip

    def log_batch(
        self,
        key: str,
        metrics: list[tuple[str, float, int, int]] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """`metrics` are (name, value, timestamp in ms, step)."""
        self._submit(
            {"op": "log_batch", "key": key, "metrics": [list(m) for m in metrics or []],
             "params": params or {}, "tags": tags or {}}
        )  # fmt: skip

    def set_status(self, key: str, status: str) -> None:
        self._submit({"op": "status", "key": key, "status": status})

    def log_artifacts(self, key: str, folder: Path, artifact_path: str | None = None) -> None:
        """Upload `folder`'s files; the folder may be deleted as soon as this returns."""
        copy = self.journal.keep_files(folder)
        self._submit({"op": "artifacts", "key": key, "dir": str(copy), "path": artifact_path})

    def register_model(
        self, key: str, model: str, artifact_path: str, alias: str, tags: dict[str, str]
    ) -> None:
        """Make the run's `artifact_path` a version of registered model `model` and point
        `alias` at it (once per run: a replay does not add a second version)."""
        self._submit(
            {"op": "register", "key": key, "model": model, "path": artifact_path,
             "alias": alias, "tags": tags}
        )  # fmt: skip

    def tag_version(self, model: str, alias: str, tags: dict[str, str]) -> None:
        """Set tags on the version of registered model `model` that `alias` points at."""
        self._submit({"op": "tag_version", "key": "", "model": model, "alias": alias, "tags": tags})

    def tag_experiment(self, tags: dict[str, str]) -> None:
        """Set tags on the experiment itself (created if it does not exist yet)."""
        self._submit({"op": "experiment_tags", "key": "", "tags": tags})

    def release(self) -> None:  # the end of `hold_seconds`, now
        with self._lock:
            self._held_until = 0.0
            self._lock.notify_all()

    @property
    def pending(self) -> int:
        """Operations not applied yet."""
        return self.applier.pending

    def refused(self) -> list[str]:
        """Why the writes the server refused (set aside in the dead-letter file) were refused;
        each is handed out once."""
        with self._lock:
            found, self.applier.refused[:] = list(self.applier.refused), []
        return found

    def drain(self, timeout: float = 600.0) -> int:
        """Wait until every operation is applied, or the server is found unreachable; returns
        how many still wait. Raises what went wrong in the background, if anything did."""
        start = time.perf_counter()
        try:
            if self._thread is None:
                return self.applier.sync()
            self.release()
            with self._lock:
                tried = self._attempts
                self._lock.notify_all()  # during an outage: try once more now, not later
                self._lock.wait_for(
                    lambda: (
                        not self.applier.ops
                        or self._error is not None
                        or (self._waiting_for_server and self._attempts > tried)
                    ),
                    timeout=timeout,
                )
                self._raise_background_error()
                return len(self.applier.ops)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> int:
        """Drain, then stop the background thread; returns how many operations still wait."""
        left = self.drain()
        if self._thread is not None:
            with self._lock:
                self._stopping = True
                self._lock.notify_all()
            self._thread.join(timeout=30)
            self._thread = None
        return left

    def sync(self) -> int:
        """Apply waiting operations in order in this thread, stopping at the first the server
        cannot take; returns how many still wait. Only for a writer without a thread."""
        assert self._thread is None, "a background writer applies its own operations"
        return self.applier.sync()

    def _submit(self, op: Op) -> None:
        start = time.perf_counter()
        try:
            with self._lock:
                self._raise_background_error()
            self.applier.submit(op)
            if self._thread is None:
                self.applier.sync()
        finally:
            self.seconds += time.perf_counter() - start

    def _run(self) -> None:
        """The background thread: apply operations in order; on an outage, wait and retry."""
        with self._lock:  # `hold_seconds`, unless released
            hold = self._held_until - time.monotonic()
            self._lock.wait_for(lambda: time.monotonic() >= self._held_until, max(0.0, hold))
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self.applier.ops) or self._stopping)
                if not self.applier.ops:
                    return
            try:
                self.applier.apply_next()
                with self._lock:
                    self._attempts += 1
            except Exception as exc:
                if not self._wait_out(exc):
                    return

    def _wait_out(self, exc: Exception) -> bool:
        """After a failed application: wait `retry_seconds` if the server is unreachable and
        return True (try again); else keep the error for the caller and return False."""
        with self._lock:
            self._attempts += 1
            if not isinstance(exc, Unreachable):
                self._error = exc
                self._lock.notify_all()
                return False
            self._waiting_for_server = True
            self._lock.notify_all()
            self._lock.wait(timeout=self.retry_seconds)
            self._waiting_for_server = False
            return not self._stopping

    def _raise_background_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing to MLflow at {self.tracking_uri} failed") from self._error
