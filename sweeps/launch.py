"""Put a sweep together: spec and data first (nothing written if they are bad), then the lock,
the studies, MLflow and the Ray workers, then the driver loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from cluster.executor import RayExecutor
from cluster.runtime import TrialResources, concurrent_slots, ray_session
from models.data import build_dataset
from models.train import choose_device
from sweeps.champion import ChampionKeeper
from sweeps.driver import Best, Incumbent, SweepDriver
from sweeps.progress import RichProgress
from sweeps.spec import SweepSpec, load_spec
from sweeps.studies import default_storage, open_storage, sweep_lock
from sweeps.tracking import Tracker, default_tracking_uri, flat_params, provenance, spool_dir


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
    best: Best
    seconds: float  # wall time of the sweep, from the lock to the end
    mlflow_seconds: float  # of which the driver spent waiting on MLflow
    incumbent_value: float | None = None  # a re-tune's re-evaluated champion, on this data
    published: bool = False  # a champion was registered by this run

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
    MLflow run; `incumbent` is the champion a re-tune must beat."""
    data = build_dataset(spec.data)
    where.run_dir.mkdir(parents=True, exist_ok=True)
    with sweep_lock(where.run_dir, spec.name):
        start = time.perf_counter()
        storage = open_storage(where.storage_url)
        tracker = Tracker(
            where.tracking,
            experiment=spec.experiment_name,
            spool=spool_dir(where.run_dir, spec.name),
            artifact_root=None if where.tracking_uri else where.run_dir / "artifacts",
            sweep=spec.name,
        )
        resolved = spec.model_dump(mode="json")
        tracker.start_sweep(
            spec.name,
            params={
                **flat_params("model.", spec.model.model_dump(mode="json")),
                **flat_params("train.", spec.train.model_dump(mode="json")),
                **flat_params("data.", spec.data.model_dump(mode="json")),
                "objective": f"{spec.objective.direction} {spec.objective.metric}",
            },
            tags={
                **provenance(str(choose_device(spec.train.device))),
                "stages": ", ".join(f"{s.name}:{s.trials}" for s in spec.stages),
            },
            files={**source, "resolved_spec.yaml": yaml.safe_dump(resolved, sort_keys=False)},
        )
        console.print(
            f"[bold]sweep {spec.name}[/bold]: {len(data.y_train)} train / {len(data.y_val)} val "
            f"samples, {data.n_features} features, {data.n_classes} classes; "
            f"stages {', '.join(f'{s.name} ({s.trials})' for s in spec.stages)}"
        )
        console.print(f"[dim]studies {where.storage_url}\nMLflow  {where.tracking}[/dim]")
        resources = TrialResources(spec.parallel.cpus_per_trial, spec.parallel.gpus_per_trial)
        with ray_session(ray_address):
            slots = concurrent_slots(spec.parallel.trials, resources)
            if slots < spec.parallel.trials:
                console.print(
                    f"[yellow]the Ray cluster fits {slots} trial(s) at once, not "
                    f"{spec.parallel.trials}[/yellow]"
                )
            executor = RayExecutor(data, resources, slots, max_retries=spec.parallel.max_retries)
            champion = ChampionKeeper(
                data, tracker, where.run_dir / "checkpoints" / spec.name, spec.model_name
            )
            try:
                with RichProgress(spec.objective.metric, console) as progress:
                    driver = SweepDriver(
                        spec, storage, tracker, executor, progress, champion, incumbent
                    )
                    best = driver.run()
            finally:
                executor.close()
        return SweepOutcome(
            best,
            time.perf_counter() - start,
            tracker.seconds,
            incumbent_value=driver.incumbent_value,
            published=driver.published,
        )
