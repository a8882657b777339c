"""Every MLflow write of a sweep, journaled on disk, then applied in order by one thread.

Writes are small operations (create a run, log a batch, set a status, upload a folder, register
a model) on runs named by *keys* that caviar chooses, stored on each run as the tag
`caviar.key`. With a key, creating a run is idempotent: before creating, the writer looks for a
run with that key. This matters because MLflow's client retries POSTs, so a create whose
response was lost may already exist on the server.

Each operation is first appended to a journal (`<spool>/ops.jsonl`; uploads are copied beside
it), then applied by a background thread, so the sweep never waits for MLflow. When the tracking
server cannot be reached, the thread keeps the operation and everything after it and retries
every `retry_seconds`; what is still waiting when the sweep ends stays in the journal, and
`caviar sync` (or the next sweep of the same name) sends it. A driver killed mid-write loses
nothing either: the journal is replayed at the next start (a replayed write is harmless —
creates look up the key, metrics with the same step and time are not stored twice).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

KEY_TAG = "caviar.key"
_TERMINAL = {"FINISHED", "FAILED", "KILLED"}
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits

# A driver's terminal is for progress, not for MLflow's per-run links and download bars.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class MlflowWriter:
    """Applies one experiment's MLflow operations in order, from a journal on disk.

    With `background=True` a thread applies them while the caller goes on; otherwise each call
    applies what it can before returning (used by `caviar sync`)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        spool_dir: Path,
        artifact_location: str | None = None,
        retry_seconds: float = 10.0,
        background: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.remote = tracking_uri.startswith(("http://", "https://"))
        if self.remote:
            # One short attempt per request: the journal, not a blocking retry loop, covers
            # an outage. Users may still set their own values.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.spool_dir = spool_dir
        self.retry_seconds = retry_seconds
        self.seconds = 0.0  # time callers spent waiting on this writer
        self.busy_seconds = 0.0  # time spent in MLflow calls, in whichever thread
        self._ids: dict[str, str] = {}
        self._experiment_id: str | None = None
        self._ops: deque[dict[str, Any]] = deque(self._read_journal())
        self._applied = 0  # operations of the journal applied so far
        self._lock = threading.Condition()
        self._waiting_for_server = False
        self._attempts = 0  # applications tried by the background thread
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
            self._thread.start()

    # -- operations ------------------------------------------------------------------------------

    def create_run(
        self,
        key: str,
        name: str,
        tags: dict[str, str],
        parent: str | None = None,
        fresh: bool = False,
    ) -> None:
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
            {
                "op": "log_batch",
                "key": key,
                "metrics": [list(m) for m in metrics or []],
                "params": params or {},
                "tags": tags or {},
            }
        )

    def set_status(self, key: str, status: str) -> None:
        self._submit({"op": "status", "key": key, "status": status})

    def log_artifacts(self, key: str, folder: Path, artifact_path: str | None = None) -> None:
        """Upload `folder`'s files; the folder may be deleted as soon as this returns."""
        copy = self.spool_dir / "files" / uuid.uuid4().hex
        shutil.copytree(folder, copy)
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

    # -- state ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Operations not applied yet."""
        with self._lock:
            return len(self._ops)

    def drain(self, timeout: float = 600.0) -> int:
        """Wait until every operation is applied, or the server is found unreachable; returns
        how many still wait. Raises what went wrong in the background, if anything did."""
        start = time.perf_counter()
        try:
            if self._thread is None:
                return self.sync()
            with self._lock:
                tried = self._attempts
                self._lock.notify_all()  # during an outage: try once more now, not later
                self._lock.wait_for(
                    lambda: (
                        not self._ops
                        or self._error is not None
                        or (self._waiting_for_server and self._attempts > tried)
                    ),
                    timeout=timeout,
                )
                self._raise_background_error()
                return len(self._ops)
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
        while True:
            with self._lock:
                if not self._ops:
                    return 0
                op = self._ops[0]
            try:
                self._apply_and_record(op)
            except Exception as exc:
                if self._unreachable(exc):
                    return self.pending
                raise

    def run_id(self, key: str) -> str | None:
        """MLflow's id of the run with `key`; None when unknown."""
        return self._find(key)

    # -- plumbing ------------------------------------------------------------------------------

    def _submit(self, op: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            with self._lock:
                self._raise_background_error()
                self._journal(op)
                self._ops.append(op)
                self._lock.notify_all()
            if self._thread is None:
                try:
                    self.sync()
                except Exception as exc:
                    if not self._unreachable(exc):
                        raise
        finally:
            self.seconds += time.perf_counter() - start

    def _run(self) -> None:
        """The background thread: apply operations in order; on an outage, wait and retry."""
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._ops) or self._stopping)
                if not self._ops:
                    return
                op = self._ops[0]
            try:
                self._apply_and_record(op)
            except Exception as exc:
                with self._lock:
                    self._attempts += 1
                    if not self._unreachable(exc):
                        self._error = exc
                        self._lock.notify_all()
                        return
                    self._waiting_for_server = True
                    self._lock.notify_all()
                    self._lock.wait(timeout=self.retry_seconds)
                    self._waiting_for_server = False
                    if self._stopping:
                        return

    def _apply_and_record(self, op: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            self._apply(op)
        finally:
            self.busy_seconds += time.perf_counter() - start
        with self._lock:
            self._attempts += 1
            self._ops.popleft()
            self._applied += 1
            if self._ops:
                (self.spool_dir / "applied").write_text(str(self._applied))
            else:  # all caught up: start the journal afresh
                self._applied = 0
                for name in ("ops.jsonl", "applied", "tracking_uri"):
                    (self.spool_dir / name).unlink(missing_ok=True)
            self._lock.notify_all()
        if op["op"] == "artifacts":  # only once it is recorded as applied
            shutil.rmtree(op["dir"], ignore_errors=True)

    def _journal(self, op: dict[str, Any]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        (self.spool_dir / "tracking_uri").write_text(self.tracking_uri)
        with open(self.spool_dir / "ops.jsonl", "a") as handle:
            handle.write(json.dumps(op) + "\n")

    def _read_journal(self) -> list[dict[str, Any]]:
        journal = self.spool_dir / "ops.jsonl"
        if not journal.exists():
            return []
        ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        for op in ops:  # a journaled create may have reached the server: look before creating
            op["fresh"] = False
        marker = self.spool_dir / "applied"
        done = int(marker.read_text()) if marker.exists() else 0
        # Rewrite the journal with only what is left, so `applied` counts from zero again.
        left = ops[done:]
        journal.write_text("".join(json.dumps(op) + "\n" for op in left))
        marker.unlink(missing_ok=True)
        return left

    @staticmethod
    def spooled_for(spool_dir: Path) -> str | None:
        """The tracking URI that operations waiting in `spool_dir` are meant for, if any wait."""
        if not (spool_dir / "ops.jsonl").exists():
            return None
        target = spool_dir / "tracking_uri"
        return target.read_text().strip() if target.exists() else None

    def _raise_background_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing to MLflow at {self.tracking_uri} failed") from self._error

    def _apply(self, op: dict[str, Any]) -> None:
        kind, key = op["op"], op["key"]
        if kind == "create_run":
            # Look for the key first unless it is new and this is its first try; a failed try
            # may have created the run on the server before the connection broke.
            fresh = op.pop("fresh", False)
            if fresh or self._find(key) is None:
                tags = {**op["tags"], KEY_TAG: key}
                if op.get("parent"):
                    tags[MLFLOW_PARENT_RUN_ID] = self._require(op["parent"])
                run = self.client.create_run(self._experiment(), run_name=op["name"], tags=tags)
                self._ids[key] = run.info.run_id
            return
        run_id = self._require(key)
        if kind == "log_batch":
            self._log_batch(run_id, op["metrics"], op["params"], op["tags"])
        elif kind == "status":
            if op["status"] in _TERMINAL:
                self.client.set_terminated(run_id, status=op["status"])
            else:
                self.client.update_run(run_id, status=op["status"])
        elif kind == "artifacts":
            if Path(op["dir"]).exists():  # gone: uploaded before a crash, then cleaned up
                self.client.log_artifacts(run_id, op["dir"], op["path"])
        elif kind == "register":
            self._register(run_id, op)
        else:
            raise ValueError(f"unknown MLflow operation {kind!r}")

    def _log_batch(
        self, run_id: str, metrics: list[list[Any]], params: dict[str, str], tags: dict[str, str]
    ) -> None:
        metric_list = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in metrics]
        param_list = [Param(k, v) for k, v in params.items()]
        tag_list = [RunTag(k, v) for k, v in tags.items()]
        while metric_list or param_list or tag_list:
            self.client.log_batch(
                run_id,
                metrics=metric_list[:_MAX_METRICS],
                params=param_list[:_MAX_PARAMS],
                tags=tag_list[:_MAX_TAGS],
            )
            metric_list = metric_list[_MAX_METRICS:]
            param_list = param_list[_MAX_PARAMS:]
            tag_list = tag_list[_MAX_TAGS:]

    def _register(self, run_id: str, op: dict[str, Any]) -> None:
        name = op["model"]
        if not self.client.search_registered_models(filter_string=f"name = '{name}'"):
            self.client.create_registered_model(name)
        existing = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        version = (
            existing[0]
            if existing
            else self.client.create_model_version(
                name, source=f"runs:/{run_id}/{op['path']}", run_id=run_id, tags=op["tags"]
            )
        )
        try:
            current = self.client.get_model_version_by_alias(name, op["alias"])
        except MlflowException:
            current = None
        if current is not None and current.version != version.version:
            # Keep the history: the champion being replaced stays reachable by alias.
            self.client.set_registered_model_alias(name, f"previous-{op['alias']}", current.version)
        self.client.set_registered_model_alias(name, op["alias"], version.version)

    def _require(self, key: str) -> str:
        run_id = self._find(key)
        if run_id is None:
            raise LookupError(f"no MLflow run with {KEY_TAG}={key} in '{self.experiment}'")
        return run_id

    def _find(self, key: str) -> str | None:
        if key not in self._ids:
            runs = self.client.search_runs(
                [self._experiment()], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1
            )
            if not runs:
                return None
            self._ids[key] = runs[0].info.run_id
        return self._ids[key]

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            )
        return self._experiment_id

    @staticmethod
    def _unreachable(exc: Exception) -> bool:
        """The server could not be reached or is failing: worth keeping the write for later."""
        if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
            return True
        if isinstance(exc, MlflowException):
            return "failed with exception" in str(exc) or exc.get_http_status_code() >= 500
        return False
