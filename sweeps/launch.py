"""Put a sweep together: spec and data first (nothing written if they are bad), then the lock,
the studies, MLflow and the Ray workers, then the driver loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from caviar.cluster import local as local_cluster
from caviar.cluster.executor import RayExecutor
from caviar.cluster.pool import ray_workers
from caviar.cluster.runtime import TrialResources
from caviar.models.collector import collector_paused
from caviar.models.data import Dataset, build_dataset
from caviar.models.executor import TrialExecutor
from caviar.sweeps.record.champion import ChampionKeeper
from caviar.sweeps.record.hosted import Host, hosted_writer
from caviar.sweeps.record.processes import HOLD_SECONDS, Hosts, sweep_hosts
from caviar.sweeps.record.provenance import flat_params, provenance
from caviar.sweeps.record.tracking import (
    Tracker,
    default_tracking_uri,
    local_artifacts,
    spool_dir,
)
from caviar.sweeps.record.view import trials_view
from caviar.sweeps.search.best import Best, Incumbent
from caviar.sweeps.search.driver import SweepDriver, SweepResult
from caviar.sweeps.search.lease import refuse_if_leased, sweep_lease
from caviar.sweeps.search.lock import refuse_if_busy, sweep_lock
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.specfile import load_spec
from caviar.sweeps.search.stages import check_unchanged
from caviar.sweeps.search.studies import default_storage, open_storage
from caviar.sweeps.views.progress import RichProgress

DATA_HEAD_START = 0.5  # seconds the data may take before Ray starts alongside it


@dataclass(frozen=True)
class Locations:
    """Where a sweep's state lives: the run directory and, optionally, external stores."""

    run_dir: Path
    storage: str | None = None  # Optuna storage URL; default SQLite in run_dir
    tracking_uri: str | None = None  # MLflow; default SQLite in run_dir

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.run_dir)

    @property
    def tracking(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.run_dir)


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep found and where it keeps it."""

    result: SweepResult
    seconds: float  # wall time of the sweep, from the lock to the end
    mlflow_seconds: float  # of which the driver spent waiting on MLflow
    where: Locations
    model_name: str  # the champion's registered model

    @property
    def best(self) -> Best:
        """The champion's trial (or the best one, when no champion could be published)."""
        return self.result.best

    @property
    def champion(self) -> str | None:
        """The champion's registry URI (`mlflow.pyfunc.load_model` takes it); None if no trial
        completed."""
        return f"models:/{self.model_name}@champion" if self.best.value is not None else None

    @property
    def mlflow_share(self) -> float:
        return self.mlflow_seconds / self.seconds if self.seconds else 0.0


def run_sweep(
    spec_path: Path, where: Locations, ray_address: str | None, console: Console
) -> SweepOutcome:
    """`caviar sweep SPEC`: load the spec file and run it."""
    spec = load_spec(spec_path)
    return execute_sweep(
        spec, where, ray_address, console, source={"spec.yaml": spec_path.read_text()}
    )


def execute_sweep(
    spec: SweepSpec,
    where: Locations,
    ray_address: str | None,
    console: Console,
    source: dict[str, str],
    incumbent: Incumbent | None = None,
) -> SweepOutcome:
    """Run (or continue) `spec`. `source` holds the files it came from, kept with the sweep's
    MLflow run; `incumbent` is the champion a re-tune must beat.

    What can overlap does: the data is made in a thread while Ray starts. What can wait
    does: MLflow's writes are applied in a child process, and the champion is built by
    another, both started once the first epoch is in (the writes wait in the journal till
    then), so that their imports do not delay the first trial (on the local cluster, both
    are processes of the cluster that stay loaded: `record.processes`). Nothing is written
    before the data is good.
    Python's garbage collector is paused until the driver starts (`models.collector`)."""
    with collector_paused() as started:
        return _start(spec, where, ray_address, console, source, incumbent, started)


def _start(
    spec: SweepSpec,
    where: Locations,
    ray_address: str | None,
    console: Console,
    source: dict[str, str],
    incumbent: Incumbent | None,
    started: Callable[[], None],
) -> SweepOutcome:
    """Ray, its workers and the data (overlapping), then the sweep (`_drive`)."""
    refuse_if_busy(where.run_dir, spec.name)
    refuse_if_leased(where.storage_url, spec.name)
    local = joined_cluster(ray_address, where.run_dir, console)
    # MLflow's writes are applied in another process, never by a thread of the driver (the
    # store's Python work would take the interpreter lock from the driver's loop): see
    # `record.processes` for which.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as background:
        data_ready = background.submit(build_dataset, spec.data)
        # A small or cached data set is ready at once: a bad file ends the command before
        # Ray starts. Larger ones go on loading while it does.
        if wait([data_ready], timeout=DATA_HEAD_START).done:
            data_ready.result()
        with (
            sweep_hosts(where.tracking, bool(where.tracking_uri), local is not None) as hosts,
            workers(spec, ray_address, console, local) as executor,
        ):
            data = data_ready.result()  # a DataError ends it here, with nothing written
            executor.load(data)
            where.run_dir.mkdir(parents=True, exist_ok=True)
            with sweep_lock(where.run_dir, spec.name), sweep_lease(where.storage_url, spec.name):
                return _drive(
                    spec, where, source, incumbent, data, executor, console, started, hosts()
                )


def _drive(
    spec: SweepSpec,
    where: Locations,
    source: dict[str, str],
    incumbent: Incumbent | None,
    data: Dataset,
    executor: TrialExecutor,
    console: Console,
    started: Callable[[], None],
    hosts: Hosts,
) -> SweepOutcome:
    """The sweep itself, under its lock: studies, record, the driver loop, the champion.
    `started()` once everything is ready, just before the first trial."""
    start = time.perf_counter()
    storage = open_storage(where.storage_url)
    check_unchanged(storage, spec)  # before anything is written
    tracker = open_record(spec, where, source, hosts.mlflow)
    _introduce(spec, data, where, console)
    with RichProgress(spec.objective.metric, console) as progress:
        folder = where.run_dir / "checkpoints" / spec.name
        champion = ChampionKeeper(
            data, tracker, folder, spec.model_name, progress.note, hosts.builder
        )
        driver = SweepDriver(spec, storage, tracker, executor, progress, champion, incumbent)
        started()
        result = driver.run()
    seconds = time.perf_counter() - start
    return SweepOutcome(result, seconds, tracker.seconds, where, spec.model_name)


def joined_cluster(
    ray_address: str | None, run_dir: Path, console: Console
) -> local_cluster.LocalCluster | None:
    """The local cluster `caviar cluster up` started for `run_dir`, when it is up and no
    other Ray is named: it is the one to join."""
    if ray_address is not None or os.environ.get("RAY_ADDRESS"):
        return None
    local = local_cluster.find(run_dir)
    if local is not None:
        console.print(f"joining the local Ray cluster at {local.address}", highlight=False)
    return local


@contextmanager
def workers(
    spec: SweepSpec,
    ray_address: str | None,
    console: Console,
    local: local_cluster.LocalCluster | None,
    wanted: int | None = None,
) -> Iterator[RayExecutor]:
    """The spec's trial workers on Ray, `wanted` (default `parallel.trials`) at once where the
    cluster holds them; `load` them with the data. Ray is joined at `ray_address`, else on the
    `local` cluster (`joined_cluster`; its workers warm), else embedded."""
    wanted = wanted or spec.parallel.trials

    def fewer(slots: int) -> None:
        console.print(f"[yellow]the Ray cluster fits {slots} trial(s) at once, not {wanted}[/]")

    parallel = spec.parallel
    resources = TrialResources(parallel.cpus_per_trial, parallel.gpus_per_trial)
    retries, timeout = parallel.max_retries, parallel.epoch_timeout
    with ray_workers(resources, wanted, retries, ray_address, fewer, local, timeout) as pool:
        yield pool


def open_record(spec: SweepSpec, where: Locations, source: dict[str, str], host: Host) -> Tracker:
    """The sweep's MLflow tracker, its parent run opened with the spec, provenance and files;
    its writes are applied by `host` (an `MlflowHost` in another process), from the first
    epoch on (`record.processes`)."""
    experiment = spec.experiment_name
    artifacts = None if where.tracking_uri else local_artifacts(where.run_dir, experiment)
    spool = spool_dir(where.run_dir, spec.name)
    writer = hosted_writer(host, where.tracking, experiment, spool, artifacts, HOLD_SECONDS)
    tracker = Tracker(writer, spec.name)
    resolved = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    tracker.start_sweep(
        spec.name,
        params={
            **flat_params("model.", spec.model.model_dump(mode="json")),
            **flat_params("train.", spec.train.model_dump(mode="json")),
            **flat_params("data.", spec.data.model_dump(mode="json")),
            "objective": f"{spec.objective.direction} {spec.objective.metric}",
        },
        tags={
            **provenance(trial_device(spec)),
            "stages": ", ".join(f"{s.name}:{s.trials}" for s in spec.stages),
        },
        files={**source, "resolved_spec.yaml": resolved},
        view=trials_view(spec.objective.metric, str(spec.objective.direction), list(spec.space)),
    )
    return tracker


def trial_device(spec: SweepSpec) -> str:
    """Where the trials train: the spec's `train.device`, or with `auto`, CUDA exactly when
    each trial is given a GPU share (Ray hides every GPU from an actor given none)."""
    if spec.train.device != "auto":
        return spec.train.device
    return "cuda" if spec.parallel.gpus_per_trial > 0 else "cpu"


def _introduce(spec: SweepSpec, data: Dataset, where: Locations, console: Console) -> None:
    console.print(
        f"[bold]sweep {spec.name}[/bold]: {len(data.y_train)} train / {len(data.y_val)} val "
        f"samples, {data.n_features} features, {data.n_classes} classes; "
        f"stages {', '.join(f'{s.name} ({s.trials})' for s in spec.stages)}"
    )
    console.print(f"[dim]studies {where.storage_url}\nMLflow  {where.tracking}[/dim]")
