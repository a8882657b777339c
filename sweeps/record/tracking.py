"""MLflow records of a sweep: one parent run per sweep, one nested run per trial.

Only the driver writes here (the single-writer rule). Runs are named by keys caviar chooses (the
parent's is `sweep`, a trial's is random and kept in its Optuna trial), so writes can be
journaled, applied by a background thread, wait while a tracking server is away and be
replayed without duplicates (`MlflowWriter`). Per-epoch metrics are buffered and sent in
batches, at most every `flush_seconds` and whenever a trial ends.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from caviar.models.metrics import EpochMetrics
from caviar.sweeps.record.store_template import sqlite_file
from caviar.sweeps.record.writer import MlflowWriter

ROLE = "caviar.role"
SWEEP_ROLE = "sweep"
TRIAL_ROLE = "trial"
SWEEP_TAG = "caviar.sweep"  # the sweep (or re-tune) a run belongs to
# MLflow metric name -> EpochMetrics field; logged per epoch with step = epoch.
EPOCH_METRICS = {
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "lr": "lr",
    "epoch_seconds": "seconds",
}

# MLflow announces creating and migrating its SQLite tables at INFO on every new store.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


MLFLOW_RUN_NAME = "mlflow.runName"  # MLflow's tag for a run's name (mlflow.utils.mlflow_tags)


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def spool_dir(run_dir: Path, sweep: str) -> Path:
    """Where MLflow writes wait while the tracking server is unreachable."""
    return run_dir / "spool" / sweep


def local_artifacts(run_dir: Path, experiment: str) -> str:
    """Where a local store keeps an experiment's artifacts: under the run directory."""
    return (run_dir / "artifacts" / experiment).resolve().as_uri()


class Tracker:
    """Writes one sweep's runs. Create it in the driver; never share it with workers."""

    def __init__(self, writer: MlflowWriter, sweep: str, flush_seconds: float = 2.0) -> None:
        """`sweep` names the sweep whose parent run this is; several sweeps, such as
        re-tunes, can share one experiment (the writer's)."""
        self.writer = writer
        self.flush_seconds = flush_seconds
        self.sweep = sweep
        self.sweep_key = sweep_run_key(sweep)
        # Per trial run: metrics and params not sent yet (they go out together, in one batch).
        self._pending: dict[str, list[tuple[str, float, int, int]]] = {}
        self._params: dict[str, dict[str, str]] = {}
        self._last_flush = time.monotonic()

    @property
    def seconds(self) -> float:
        """Time the driver spent waiting on MLflow (queueing writes, the final drain)."""
        return self.writer.seconds

    # -- the sweep ------------------------------------------------------------------------------

    def start_sweep(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        files: dict[str, str],
        view: dict[str, str] | None = None,
    ) -> None:
        """Open the sweep's parent run, reusing the one an earlier driver created; `view`
        tags the experiment with its comparison view (`view.trials_view`)."""
        if view:
            self.writer.tag_experiment(view)
        self.writer.create_run(
            self.sweep_key, name, {ROLE: SWEEP_ROLE, MLFLOW_RUN_NAME: name, SWEEP_TAG: name}
        )
        self.writer.set_status(self.sweep_key, "RUNNING")
        self.writer.log_batch(
            self.sweep_key, params={k: _text(v) for k, v in params.items()}, tags=tags
        )
        with tempfile.TemporaryDirectory() as folder:
            for filename, text in files.items():
                (Path(folder) / filename).write_text(text)
            self.writer.log_artifacts(self.sweep_key, Path(folder))

    def record_best(self, metric: str, value: float, params: dict[str, Any], finished: int) -> None:
        """The best value so far (a curve over finished trials) and its hyperparameters."""
        self.writer.log_batch(
            self.sweep_key,
            metrics=[(f"best_{metric}", value, _now_ms(), finished)],
            tags={f"best.{k}": _text(v) for k, v in params.items()} | {"best.value": _text(value)},
        )

    def record_stage(self, stage: str, box: dict[str, list[Any]], kept: int, carried: int) -> None:
        """A stage's search box (user form) and where it came from, as parent-run tags."""
        tags = {f"box.{stage}.{name}": _text(bounds) for name, bounds in box.items()}
        tags[f"stage.{stage}.kept_from_previous"] = str(kept)
        tags[f"stage.{stage}.carried_trials"] = str(carried)
        self.writer.log_batch(self.sweep_key, tags=tags)

    def start_writing(self) -> None:
        """Send the writes held back while the sweep started (its writer's `hold_seconds`)."""
        self.writer.release()

    def refused(self) -> list[str]:
        """Writes MLflow refused since the last call (set aside in the spool's dead letters)."""
        return self.writer.refused()

    def unreachable_note(self, waiting: int) -> str:
        """What to tell the user when writes wait for an unreachable server."""
        return (
            f"MLflow at {self.writer.tracking_uri} is unreachable: {waiting} writes wait in "
            f"{self.writer.journal.spool_dir}; `caviar sync` sends them"
        )

    def end_sweep(self, status: str = "FINISHED") -> int:
        """Close the parent run and wait for the writes to land; returns how many still wait
        for an unreachable server (they stay journaled for `caviar sync`)."""
        self.flush()
        self.writer.set_status(self.sweep_key, status)
        return self.writer.close()

    # -- trials ---------------------------------------------------------------------------------

    @staticmethod
    def new_key() -> str:
        """A key for a run not created yet (record it before creating the run)."""
        return uuid.uuid4().hex

    def start_trial(
        self, stage: str, number: int, params: dict[str, Any], key: str | None = None
    ) -> str:
        """Create the trial's run under `key` (a new key if None); returns the key. A key
        given may already have its run (a driver died after creating it): no second is made."""
        fresh = key is None
        key = key or self.new_key()
        name = f"{stage}-{number:03d}"
        self.writer.create_run(
            key,
            name,
            {
                MLFLOW_RUN_NAME: name,
                ROLE: TRIAL_ROLE,
                SWEEP_TAG: self.sweep,
                "stage": stage,
                "trial": str(number),
                "state": "running",
            },
            parent=self.sweep_key,
            fresh=fresh,
        )
        self._params[key] = {k: _text(v) for k, v in params.items()}
        return key

    def log_epoch(self, key: str, metrics: EpochMetrics) -> None:
        now = _now_ms()
        values = metrics.as_dict()
        self._pending.setdefault(key, []).extend(
            (name, values[field], now, metrics.epoch) for name, field in EPOCH_METRICS.items()
        )

    def end_trial(self, key: str, state: str, tags: dict[str, str] | None = None) -> None:
        """Close a trial run. `state` is complete, pruned or failed."""
        self.writer.log_batch(
            key,
            metrics=self._pending.pop(key, []),
            params=self._params.pop(key, {}),
            tags={"state": state, **(tags or {})},
        )
        status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        self.writer.set_status(key, status)

    def publish_model(
        self,
        key: str,
        model_dir: Path,
        registered_name: str,
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> None:
        """Upload a saved MLflow model to the trial's run under `model/`, register it under
        `registered_name` and point the `champion` alias at it."""
        self.writer.log_artifacts(key, model_dir, "model")
        self.writer.log_batch(key, metrics=[(k, v, _now_ms(), 0) for k, v in metrics.items()])
        self.writer.register_model(key, registered_name, "model", "champion", tags)
        self.writer.log_batch(self.sweep_key, tags={"champion": tags.get("trial", key)})

    def record_seeds(self, key: str, metric: str, seeds: list[int], scores: list[float]) -> None:
        """A trial's scores when trained again with other seeds (step = seed), and their
        mean and spread as tags."""
        finite = [s for s in scores if math.isfinite(s)]
        mean = statistics.fmean(finite) if finite else math.nan
        spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
        now = _now_ms()
        pairs = zip(seeds, scores, strict=True)
        self.writer.log_batch(
            key,
            metrics=[(f"seed_{metric}", s, now, seed) for seed, s in pairs if math.isfinite(s)],
            tags={"seeds.mean": f"{mean:.6g}", "seeds.sd": f"{spread:.6g}", "seeds": str(seeds)},
        )

    def rebase_champion(self, registered_name: str, tags: dict[str, str]) -> None:
        """Update the tags of the current champion version (a re-tune kept it)."""
        self.writer.tag_version(registered_name, "champion", tags)
        self.writer.log_batch(self.sweep_key, tags={"champion": "kept"})

    def flush(self, force: bool = True) -> None:
        """Send buffered metrics; without `force`, only when `flush_seconds` have passed."""
        if not force and time.monotonic() - self._last_flush < self.flush_seconds:
            return
        for key in set(self._pending) | set(self._params):
            self.writer.log_batch(
                key, metrics=self._pending.pop(key, []), params=self._params.pop(key, {})
            )
        self._last_flush = time.monotonic()


def sweep_run_key(sweep: str) -> str:
    """The key of a sweep's parent run: one per sweep name."""
    return f"sweep:{sweep}"


def attach_to_sweep(
    tracking_uri: str, experiment: str, sweep: str, spool: Path, path: Path
) -> bool:
    """Log a file (e.g. the report) to the sweep's parent run, through the sweep's journal
    (hold the sweep's lock). False if the sweep has no MLflow record yet: nothing is created."""
    writer = MlflowWriter(tracking_uri, experiment, spool)
    if not writer.pending and not _sweep_recorded(tracking_uri, experiment, sweep):
        return False
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(path, folder)
        writer.log_artifacts(sweep_run_key(sweep), Path(folder))
    writer.close()
    return True


def _sweep_recorded(tracking_uri: str, experiment: str, sweep: str) -> bool:
    """Whether the sweep's parent run exists (a read: nothing is created, not even a store)."""
    local = sqlite_file(tracking_uri)
    if local is not None and not Path(local).exists():
        return False
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{ROLE}` = '{SWEEP_ROLE}' and tags.`{SWEEP_TAG}` = '{sweep}'",
        max_results=1,
    )
    return bool(runs)


def _text(value: Any) -> str:
    if hasattr(value, "value"):  # enums
        value = value.value
    return value if isinstance(value, str) else json.dumps(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
