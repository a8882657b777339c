"""Applying one journaled operation to MLflow, on runs named by caviar's keys.

Each run carries its key as the tag `caviar.key`. With a key, creating a run is idempotent:
before creating, look for a run with that key. This matters because MLflow's client retries
POSTs, so a create whose response was lost may already exist on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from caviar.sweeps.record.journal import Op
from caviar.sweeps.sqlite_wal import use_wal

KEY_TAG = "caviar.key"


use_wal()  # before MLflow's store connects


_TERMINAL = {"FINISHED", "FAILED", "KILLED"}
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits


def unreachable(exc: Exception) -> bool:
    """The server could not be reached or is failing: worth keeping the write for later."""
    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return "failed with exception" in str(exc) or status >= 500 or status == 429
    return False


def rejected(exc: Exception) -> bool:
    """The server refused the write itself (a 4xx: a changed param, a bad name, a run that
    was never created): sending it again cannot help."""
    if isinstance(exc, LookupError):
        return True
    return isinstance(exc, MlflowException) and not unreachable(exc)


class MlflowOperations:
    """One experiment's runs, by key; `apply` performs one journaled operation."""

    unreachable = staticmethod(unreachable)
    rejected = staticmethod(rejected)

    def __init__(
        self, client: MlflowClient, experiment: str, artifact_location: str | None
    ) -> None:
        self.client = client
        self.experiment = experiment
        self.artifact_location = artifact_location
        self._ids: dict[str, str] = {}
        self._experiment_id: str | None = None

    def apply(self, op: Op) -> None:
        kind, key = op["op"], op["key"]
        if kind == "create_run":
            self._create_run(op)
            return
        if kind == "experiment_tags":
            for tag, value in op["tags"].items():
                self.client.set_experiment_tag(self._experiment(), tag, value)
            return
        if kind == "tag_version":
            version = self.client.get_model_version_by_alias(op["model"], op["alias"])
            for tag, value in op["tags"].items():
                self.client.set_model_version_tag(op["model"], version.version, tag, value)
            return
        run_id = self.require(key)
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

    def find(self, key: str) -> str | None:
        """MLflow's id of the run with `key`; None when there is none."""
        if key not in self._ids:
            runs = self.client.search_runs(
                [self._experiment()], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1
            )
            if not runs:
                return None
            self._ids[key] = runs[0].info.run_id
        return self._ids[key]

    def require(self, key: str) -> str:
        run_id = self.find(key)
        if run_id is None:
            raise LookupError(f"no MLflow run with {KEY_TAG}={key} in '{self.experiment}'")
        return run_id

    def _create_run(self, op: Op) -> None:
        # Look for the key first unless it is new and this is its first try; a failed try
        # may have created the run on the server before the connection broke.
        key = op["key"]
        fresh = op.pop("fresh", False)
        if not fresh and self.find(key) is not None:
            return
        tags = {**op["tags"], KEY_TAG: key}
        if op.get("parent"):
            tags[MLFLOW_PARENT_RUN_ID] = self.require(op["parent"])
        run = self.client.create_run(self._experiment(), run_name=op["name"], tags=tags)
        self._ids[key] = run.info.run_id

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

    def _register(self, run_id: str, op: Op) -> None:
        """Make the run's model a version of `op["model"]` (once per run) and point the alias
        at it; the version it replaces keeps the alias `previous-<alias>`."""
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
            self.client.set_registered_model_alias(name, f"previous-{op['alias']}", current.version)
        self.client.set_registered_model_alias(name, op["alias"], version.version)

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
