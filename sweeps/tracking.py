"""MLflow records of a sweep: one parent run per sweep, one nested run per trial.

Only the driver writes here (the single-writer rule): runs are created once, from one process,
so a retried request cannot create a run twice. Per-epoch metrics are buffered and sent in
batches (`log_batch`), at most every `flush_seconds` and whenever a trial ends.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from models.train import EpochMetrics

ROLE = "caviar.role"
SWEEP_ROLE = "sweep"
TRIAL_ROLE = "trial"
EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "lr", "seconds")
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits


# MLflow announces creating and migrating its SQLite tables at INFO on every new store.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


class Tracker:
    """Writes one sweep's runs. Create it in the driver; never share it with workers."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        flush_seconds: float = 2.0,
    ) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        self.flush_seconds = flush_seconds
        self.parent_run_id: str | None = None
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()

    # -- the sweep ------------------------------------------------------------------------------

    def start_sweep(
        self, name: str, params: dict[str, Any], tags: dict[str, str], files: dict[str, str]
    ) -> str:
        """Open the sweep's parent run, reusing the one an earlier driver created."""
        existing = _sweep_run_id(self.client, self.experiment_id)
        if existing is not None:
            run_id = existing
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=name, tags={ROLE: SWEEP_ROLE, MLFLOW_RUN_NAME: name}
            )
            run_id = run.info.run_id
        self.parent_run_id = run_id
        self._log_batch(run_id, params=params, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            for filename, text in files.items():
                (Path(folder) / filename).write_text(text)
            self.client.log_artifacts(run_id, folder)
        return run_id

    def record_best(self, metric: str, value: float, params: dict[str, Any], finished: int) -> None:
        """The best value so far (a curve over finished trials) and its hyperparameters."""
        assert self.parent_run_id is not None
        self._log_batch(
            self.parent_run_id,
            metrics=[Metric(f"best_{metric}", value, _now_ms(), finished)],
            tags={f"best.{k}": _text(v) for k, v in params.items()} | {"best.value": _text(value)},
        )

    def record_stage(self, stage: str, box: dict[str, list[Any]], kept: int, carried: int) -> None:
        """A stage's search box (user form) and where it came from, as parent-run tags."""
        assert self.parent_run_id is not None
        tags = {f"box.{stage}.{name}": _text(bounds) for name, bounds in box.items()}
        tags[f"stage.{stage}.kept_from_previous"] = str(kept)
        tags[f"stage.{stage}.carried_trials"] = str(carried)
        self._log_batch(self.parent_run_id, tags=tags)

    def end_sweep(self, status: str = "FINISHED") -> None:
        self.flush()
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    # -- trials ---------------------------------------------------------------------------------

    def start_trial(self, stage: str, number: int, params: dict[str, Any]) -> str:
        assert self.parent_run_id is not None, "start_sweep first"
        name = f"{stage}-{number:03d}"
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: name,
                ROLE: TRIAL_ROLE,
                "stage": stage,
                "trial": str(number),
                "state": "running",
            },
        )
        self._log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        now = _now_ms()
        values = metrics.as_dict()
        self._pending.setdefault(run_id, []).extend(
            Metric(key, values[key], now, metrics.epoch) for key in EPOCH_METRICS
        )

    def end_trial(self, run_id: str, state: str, tags: dict[str, str] | None = None) -> None:
        """Close a trial run. `state` is complete, pruned or failed."""
        self._send(run_id)
        self._log_batch(run_id, tags={"state": state, **(tags or {})})
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status)

    def flush(self, force: bool = True) -> None:
        """Send buffered metrics; without `force`, only when `flush_seconds` have passed."""
        if not force and time.monotonic() - self._last_flush < self.flush_seconds:
            return
        for run_id in list(self._pending):
            self._send(run_id)
        self._last_flush = time.monotonic()

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, run_id: str) -> None:
        metrics = self._pending.pop(run_id, [])
        for i in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS])

    def _log_batch(
        self,
        run_id: str,
        metrics: list[Metric] | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        param_list = [Param(k, _text(v)) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
        metric_list = list(metrics or [])
        while param_list or tag_list or metric_list:
            self.client.log_batch(
                run_id,
                metrics=metric_list[:_MAX_METRICS],
                params=param_list[:_MAX_PARAMS],
                tags=tag_list[:_MAX_TAGS],
            )
            metric_list = metric_list[_MAX_METRICS:]
            param_list = param_list[_MAX_PARAMS:]
            tag_list = tag_list[_MAX_TAGS:]


def attach_to_sweep(tracking_uri: str, experiment: str, path: Path) -> str | None:
    """Log a file (e.g. the report) to the sweep's parent run; the run id, or None if the sweep
    has no MLflow record there yet (nothing is created)."""
    if (
        tracking_uri.startswith("sqlite:///")
        and not Path(tracking_uri[len("sqlite:///") :]).exists()
    ):
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    run_id = _sweep_run_id(client, found.experiment_id) if found is not None else None
    if run_id is not None:
        client.log_artifact(run_id, str(path))
    return run_id


def _sweep_run_id(client: MlflowClient, experiment_id: str) -> str | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{ROLE}` = '{SWEEP_ROLE}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def provenance(device: str) -> dict[str, str]:
    """What produced a sweep: code version, package versions and hardware, as run tags."""
    tags = {
        "mlflow.source.git.commit": _git_sha(),
        "python": platform.python_version(),
        "host": platform.node(),
        "device": device,
    }
    for package in ("torch", "optuna", "mlflow", "ray", "numpy", "caviar"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    return tags


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


def _git_sha() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _text(value: Any) -> str:
    if hasattr(value, "value"):  # enums
        value = value.value
    return value if isinstance(value, str) else json.dumps(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
