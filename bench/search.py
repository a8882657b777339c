"""Grid vs random vs coarse-to-fine on MNIST-1D, through the real product (Ray, Optuna,
MLflow), at the same trial budget and epochs per trial. Each strategy runs with several seeds;
the table shows the best validation accuracy (mean, standard deviation, range) and wall time.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from bench.app import app
from caviar.cluster.runtime import ray_session
from caviar.sweeps.launch import Locations, run_sweep

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
