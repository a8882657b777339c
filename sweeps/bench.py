"""Benchmarks, run through the real product (Ray, Optuna, MLflow).

`python -m sweeps.bench search` (`make bench-search`): on MNIST-1D, at the same trial budget and
epochs per trial, compare a grid, random search and coarse-to-fine (random over the full ranges,
then random inside the box around the best trials). Each strategy runs with several seeds; the
table shows the best validation accuracy (mean, standard deviation, range) and wall time.

`python -m sweeps.bench tracking` (`make bench-tracking`): MLflow's share of sweep wall time,
for the shipped specs, with the local SQLite store and with a tracking server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import requests
import typer
import yaml
from rich.console import Console
from rich.table import Table

from cluster.runtime import ray_session
from sweeps.launch import Locations, run_sweep

# Three hyperparameters so that a 3-point grid uses exactly the budget: 3^3 = 27 trials.
SPACE = {
    "lr": {"scale": "log", "low": 1.0e-4, "high": 1.0},
    "momentum": {"scale": "log1m", "low": 0.5, "high": 0.999},
    "weight_decay": {"scale": "log", "low": 1.0e-6, "high": 1.0e-1},
}
BUDGET = 27


def strategies(budget: int, coarse_share: float) -> dict[str, list[dict[str, Any]]]:
    """Stage lists with the same total budget; no pruning, so every trial trains fully."""
    coarse = round(budget * coarse_share)
    return {
        "grid": [{"name": "grid", "trials": budget, "sampler": "grid", "grid_points": 3}],
        "random": [{"name": "random", "trials": budget, "sampler": "random"}],
        "coarse-to-fine": [
            {"name": "coarse", "trials": coarse, "sampler": "random"},
            {
                "name": "fine",
                "trials": budget - coarse,
                "sampler": "random",
                "keep_top": 3,
                "margin": 0.05,
            },
        ],
    }


def search_spec(
    strategy: str, stages: list[dict[str, Any]], seed: int, epochs: int, samples: int
) -> dict[str, Any]:
    return {
        "name": f"bench-{strategy}-seed{seed}",
        "data": {"source": "mnist1d", "samples": samples, "seed": 42},
        "model": {"hidden_units": 256, "layers": 2, "batch_norm": True},
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "sgd", "seed": seed},
        "space": SPACE,
        "stages": stages,
        "objective": {"metric": "val_accuracy"},
        "parallel": {"trials": 2, "cpus_per_trial": 1},
        "seed": seed,
    }


app = typer.Typer(add_completion=False, help=__doc__)


@app.callback()
def benchmarks() -> None:
    """Benchmarks of caviar's search; see `search`."""


@app.command()
def search(
    seeds: Annotated[int, typer.Option(help="Seeds per strategy.")] = 5,
    epochs: Annotated[int, typer.Option(help="Epochs per trial.")] = 10,
    samples: Annotated[int, typer.Option(help="MNIST-1D samples (all splits).")] = 5000,
    coarse_share: Annotated[
        float, typer.Option(help="Share of the budget for the coarse stage.")
    ] = 0.55,
    out: Annotated[Path, typer.Option(help="Folder for specs, stores and results.")] = Path(
        "runs/bench-search"
    ),
) -> None:
    """Grid vs random vs coarse-to-fine at equal budget, several seeds each."""
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    plans = strategies(BUDGET, coarse_share)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in plans}
    console.print(
        f"MNIST-1D ({samples} samples), {BUDGET} trials x {epochs} epochs per sweep, "
        f"{seeds} seeds per strategy, no pruning"
    )
    with ray_session():
        for seed in range(seeds):
            for name, stages in plans.items():
                spec_path = out / f"{name}-seed{seed}.yaml"
                spec_path.write_text(
                    yaml.safe_dump(search_spec(name, stages, seed, epochs, samples))
                )
                start = time.perf_counter()
                best = run_sweep(
                    spec_path, Locations(out / "store"), None, Console(quiet=True)
                ).best
                seconds = time.perf_counter() - start
                assert best.value is not None
                results[name].append({"seed": seed, "best": best.value, "seconds": seconds})
                console.print(f"  {name:<15} seed {seed}: best {best.value:.4f} in {seconds:.0f} s")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    console.print(_table(results, epochs))


@app.command()
def tracking(
    specs: Annotated[list[Path] | None, typer.Argument(help="Specs to sweep.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the stores.")] = Path("runs/bench-tracking"),
    server: Annotated[bool, typer.Option(help="Also log to a local MLflow server.")] = True,
) -> None:
    """Time spent in MLflow calls as a share of each sweep's wall time (goal: under 5%)."""
    console = Console()
    chosen = specs or [Path("sweeps/specs/quick.yaml"), Path("sweeps/specs/mnist1d.yaml")]
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    with ray_session():
        for spec in chosen:
            local = run_sweep(spec, Locations(out / "local"), None, Console(quiet=True))
            rows.append((spec.name, "SQLite file", local))
            console.print(
                f"  {spec.name} (SQLite): {local.mlflow_share:.1%} of {local.seconds:.0f} s"
            )
            if server:
                with _tracking_server(out / "server") as url:
                    remote = run_sweep(spec, Locations(out / "remote", tracking_uri=url), None,
                                       Console(quiet=True))  # fmt: skip
                rows.append((spec.name, "tracking server", remote))
                console.print(
                    f"  {spec.name} (server): {remote.mlflow_share:.1%} of {remote.seconds:.0f} s"
                )
    table = Table("spec", "MLflow store", "sweep wall time", "in MLflow calls", "share",
                  title="MLflow's share of sweep wall time")  # fmt: skip
    for name, store, outcome in rows:
        table.add_row(name, store, f"{outcome.seconds:.1f} s", f"{outcome.mlflow_seconds:.2f} s",
                      f"{outcome.mlflow_share:.1%}")  # fmt: skip
    console.print(table)


@contextmanager
def _tracking_server(run_dir: Path) -> Iterator[str]:
    """`caviar ui` on a free port, as a tracking server; stopped on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir.mkdir(parents=True, exist_ok=True)
    caviar = Path(sys.executable).parent / "caviar"
    process = subprocess.Popen(
        [caviar, "ui", "--run-dir", run_dir, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            with suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()


def _table(results: dict[str, list[dict[str, float]]], epochs: int) -> Table:
    table = Table(
        "strategy",
        "best val_accuracy (mean ± sd)",
        "min – max",
        "wall time per sweep",
        title=f"search strategies at {BUDGET} trials x {epochs} epochs",
    )
    for name, runs in results.items():
        best = [r["best"] for r in runs]
        seconds = [r["seconds"] for r in runs]
        spread = statistics.stdev(best) if len(best) > 1 else 0.0
        table.add_row(
            name,
            f"{statistics.mean(best):.4f} ± {spread:.4f}",
            f"{min(best):.4f} – {max(best):.4f}",
            f"{statistics.mean(seconds):.0f} s",
        )
    return table


if __name__ == "__main__":
    app()
