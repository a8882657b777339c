"""`python -m bench peers` (`make bench-peers`): every system on the workload, each run in a
fresh process, `--repeats` times; the table shows each system's median run: whole-process
wall, time to first trial, epochs, epochs per second, best validation accuracy, scheduling
efficiency (epoch compute / (slots x trial phase)), and caviar's ratios to the peers.

caviar runs cold (embedded Ray, a new process: what `caviar sweep` costs from nothing) and
warm (`caviar cluster up` once, then one sweep to warm the workers, then the measured ones)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.app import app
from bench.peers import workload as w

CAVIAR = Path(sys.executable).parent / "caviar"
MODULES = {"tune": "run_tune", "optuna": "run_optuna", "caviar": "run_caviar"}


@app.command()
def peers(
    out: Annotated[Path, typer.Option(help="Folder for stores and results.")] = Path(
        "runs/bench-peers"
    ),
    systems: Annotated[
        str, typer.Option(help="Comma-separated: tune, optuna, caviar, caviar-warm.")
    ] = "tune,optuna,caviar,caviar-warm",
    repeats: Annotated[int, typer.Option(min=1, help="Runs per system; the median counts.")] = 3,
) -> None:
    """caviar against Ray Tune and plain Optuna on the same workload and budget."""
    console = Console(width=160)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for system in systems.split(","):
        if system == "caviar-warm":
            runs[system] = _warm_runs(out, console, repeats)
        else:
            runs[system] = [_run(system, out, console, f"{system}-{i}") for i in range(repeats)]
    (out / "results.json").write_text(json.dumps(runs, indent=2))
    console.print(_table({system: _median(rows) for system, rows in runs.items()}))


def _run(system: str, out: Path, console: Console, label: str,
         run_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    result = out / f"{label}.json"
    extra = {
        "tune": [str(out / label)],
        "optuna": [],
        "caviar": [str(run_dir or out / label), "caviar (warm cluster)" if run_dir else "caviar"],
    }[system]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    started = time.time()
    subprocess.run([sys.executable, "-m", f"bench.peers.{MODULES[system]}", str(result), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.time() - started
    row = json.loads(result.read_text())
    row.update(wall=wall, first_trial_after=row["first_trial"] - started)
    phase = (row["last_trial"] - row["first_trial"]) * w.SLOTS
    row["efficiency"] = row["compute"] / phase
    console.print(f"{label}: {wall:.1f} s, first trial after {row['first_trial_after']:.2f} s, "
                  f"{row['epochs']} epochs, best {row['best_val']:.3f}, "
                  f"efficiency {row['efficiency']:.2f}")  # fmt: skip
    return row


def _warm_runs(out: Path, console: Console, repeats: int) -> list[dict[str, Any]]:
    """caviar on a persistent local cluster: started once, one sweep to warm its workers
    (not counted), then `repeats` measured sweeps, each a new sweep in a new process."""
    cluster_dir = out / "cluster"
    subprocess.run([CAVIAR, "cluster", "up", "--run-dir", cluster_dir], check=True)
    try:
        _run("caviar", out, console, "caviar-warming", cluster_dir)
        return [_run("caviar", out, console, f"caviar-warm-{i}", cluster_dir)
                for i in range(repeats)]  # fmt: skip
    finally:
        subprocess.run([CAVIAR, "cluster", "down", "--run-dir", cluster_dir], check=False)


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median whole-process wall."""
    walls = sorted(rows, key=lambda r: r["wall"])
    middle = walls[(len(walls) - 1) // 2]
    return {**middle, "spread": (walls[0]["wall"], walls[-1]["wall"]),
            "median_epochs": statistics.median(r["epochs"] for r in rows)}  # fmt: skip


def _table(medians: dict[str, dict[str, Any]]) -> Table:
    table = Table("system", "whole process (min-max)", "first trial after", "epochs",
                  "epochs/s", "best val", "efficiency",
                  title=f"{w.TRIALS} trials x <= {w.EPOCHS} epochs, {w.SLOTS} at a time, "
                  "MNIST-1D 3,200/800, median run")  # fmt: skip
    for name, row in medians.items():
        low, high = row["spread"]
        table.add_row(f"{name}: {row['system']}", f"{row['wall']:.1f} s ({low:.1f}-{high:.1f})",
                      f"{row['first_trial_after']:.2f} s", str(row["epochs"]),
                      f"{row['epochs'] / row['wall']:.1f}", f"{row['best_val']:.3f}",
                      f"{row['efficiency']:.2f}")  # fmt: skip
    ours = {n: r for n, r in medians.items() if n.startswith("caviar")}
    theirs = {n: r for n, r in medians.items() if not n.startswith("caviar")}
    for mine, m in ours.items():
        for peer, p in theirs.items():
            table.add_row(f"{mine} / {peer}", f"{m['wall'] / p['wall']:.2f}x",
                          f"{m['first_trial_after'] / p['first_trial_after']:.2f}x",
                          "", "", "", "")  # fmt: skip
    return table
