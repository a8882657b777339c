"""How many trials a second the driver itself handles: the real driver (Optuna studies in the
default journal storage, the pruner, the MLflow journal and the child process that applies it
to the local store, as in a sweep) over an executor whose trials cost nothing.

`python -m bench driver` (`make bench-driver`): 100 / 1,000 / 10,000 trials with the random
sampler and the median pruner, 5 epochs each, and TPE at 1,000. "driver" is the time until the
last trial is told (ms per trial: what the search loop costs); "MLflow catching up" is how long
the child then still applies the record (the local store takes about 15 ms a trial: with
trials that cost nothing, it lags behind).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from bench.app import app
from caviar.models.executor import EpochDone, Event, TrialJob
from caviar.models.metrics import EpochMetrics
from caviar.sweeps.record.hosted import hosted_writer
from caviar.sweeps.record.processes import mlflow_child
from caviar.sweeps.record.tracking import Tracker, local_artifacts, spool_dir
from caviar.sweeps.search.driver import SweepDriver
from caviar.sweeps.search.specfile import load_spec
from caviar.sweeps.search.studies import default_storage, open_storage


class InstantExecutor:
    """Trials that cost nothing: each epoch's metrics are a smooth function of the learning
    rate (best near 0.05) that improves with epochs, so samplers and pruners have signal."""

    def __init__(self, slots: int = 2) -> None:
        self._slots = slots
        self._jobs: dict[int, TrialJob] = {}
        self._epoch: dict[int, int] = {}
        self._due: deque[int] = deque()

    @property
    def slots(self) -> int:
        return self._slots

    def start(self, job: TrialJob) -> None:
        self._jobs[job.key], self._epoch[job.key] = job, 0
        self._due.append(job.key)

    def proceed(self, key: int) -> None:
        self._due.append(key)

    def release(self, key: int) -> None:
        self._jobs.pop(key, None)

    def weights(self, key: int) -> Any:
        return None

    def run_tasks(self, task: Any, calls: list[Any]) -> list[Any]:
        raise RuntimeError("the instant executor has no data to run tasks on")

    def packed(self, size: int) -> None:
        return None

    def wait(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        while self._due:
            key = self._due.popleft()
            if key not in self._jobs:
                continue
            self._epoch[key] += 1
            events.append(EpochDone(key, self._metrics(self._jobs[key], self._epoch[key])))
        return events

    def close(self) -> None:
        self._jobs.clear()

    @staticmethod
    def _metrics(job: TrialJob, epoch: int) -> EpochMetrics:
        distance = abs(math.log10(job.train.lr) - math.log10(0.05))
        accuracy = max(0.1, 0.95 - 0.25 * distance) * (1 - 0.5 / (epoch + 1))
        return EpochMetrics(epoch, 1 - accuracy, 1 - accuracy, accuracy, job.train.lr, 0.0)


def spec(trials: int, sampler: str) -> dict[str, Any]:
    return {
        "name": f"driver-{sampler}-{trials}",
        "data": {"source": "digits"},
        "train": {"epochs": 5},
        "space": {
            "lr": {"scale": "log", "low": 1.0e-4, "high": 1.0},
            "momentum": {"scale": "log1m", "low": 0.5, "high": 0.99},
            "weight_decay": {"scale": "log", "low": 1.0e-6, "high": 1.0e-2},
        },
        "stages": [
            {
                "name": "search",
                "trials": trials,
                "sampler": sampler,
                "pruner": {"kind": "median", "startup_trials": 5, "warmup_epochs": 1},
            }
        ],
        "parallel": {"trials": 8},
    }


class Quiet:
    """A progress sink that says nothing."""

    def stage_started(self, plan: Any, done: int) -> None: ...
    def trial_ended(self, end: Any, best: Any) -> None: ...
    def running(self, count: int) -> None: ...
    def note(self, text: str) -> None: ...


def run(trials: int, sampler: str, folder: Path) -> dict[str, float]:
    """One sweep through the real driver, in `folder`; seconds and ms per trial."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(trials, sampler)))
    loaded = load_spec(path)
    storage = open_storage(default_storage(folder))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    decided: list[float] = []
    child = mlflow_child(uri)  # where a sweep applies its MLflow writes
    try:
        writer = hosted_writer(child, uri, loaded.name, spool_dir(folder, loaded.name),
                               local_artifacts(folder, loaded.name))  # fmt: skip
        tracker = Tracker(writer, loaded.name)
        end_sweep = tracker.end_sweep

        def ends(status: str = "FINISHED") -> int:  # the last trial is told: MLflow may lag
            decided.append(time.perf_counter())
            return end_sweep(status)

        tracker.end_sweep = ends  # type: ignore[method-assign]
        start = time.perf_counter()
        SweepDriver(loaded, storage, tracker, InstantExecutor(), Quiet()).run()
        seconds = time.perf_counter() - start
    finally:
        child.close()
    loop = decided[0] - start
    return {
        "trials": trials,
        "driver_seconds": loop,
        "ms_per_trial": 1000 * loop / trials,
        "mlflow_catch_up_seconds": seconds - loop,
        "seconds": seconds,
    }


@app.command()
def driver(
    sizes: Annotated[str, typer.Option(help="Trial counts for the random sampler.")] = (
        "100,1000,10000"
    ),
    tpe: Annotated[int, typer.Option(help="Trials with TPE (0: skip).")] = 1000,
    out: Annotated[Path, typer.Option(help="Folder for the stores.")] = Path("runs/bench-driver"),
) -> None:
    """Milliseconds per trial of the driver itself, with an executor whose trials cost nothing."""
    console = Console()
    rows = [
        ("random", n, run(n, "random", out / f"random-{n}")) for n in map(int, sizes.split(","))
    ]
    if tpe:
        rows.append(("tpe", tpe, run(tpe, "tpe", out / f"tpe-{tpe}")))
    title = "the driver with instant trials (median pruner, 5 epochs each)"
    table = Table("sampler", "trials", "driver", "ms per trial", "ms per epoch report",
                  "MLflow catching up after", "wall", title=title)  # fmt: skip
    for sampler, n, r in rows:
        per_trial = r["ms_per_trial"]
        table.add_row(sampler, str(n), f"{r['driver_seconds']:.1f} s", f"{per_trial:.2f}",
                      f"{per_trial / 5:.2f}", f"{r['mlflow_catch_up_seconds']:.1f} s",
                      f"{r['seconds']:.1f} s")  # fmt: skip
    console.print(table)
    (out / "results.json").write_text(json.dumps([r for *_, r in rows], indent=2))
