"""`python -m bench peers` (`make bench-peers`): every system on the workload, each run in a
fresh process, `--repeats` times; the table shows each system's median run (whole-process
wall, epochs, epochs per second, best validation accuracy), the median and range over all
its runs of the time to first trial and of the scheduling efficiency (epoch compute /
(slots x trial phase)), the epochs per second of all its runs together (runs differ in how
many epochs TPE and the pruner let through), what each run found (its best configuration
trained again on three new seeds, the same way for every system), and caviar's ratios to the
peers.

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
    _retrain(runs, console)
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


def _retrain(runs: dict[str, list[dict[str, Any]]], console: Console) -> None:
    """Each run's best configuration trained again, the same way for every system, on seeds
    none of them used: a run's best val is the best of many single-seed draws, partly luck."""
    from bench.peers.plain_torch import retrained

    data = w.mnist1d_splits()
    with console.status("training each run's best configuration on new seeds"):
        for rows in runs.values():
            for row in rows:
                row["retrained"] = retrained(row["best_config"], data, w.EPOCHS, w.RETRAIN_SEEDS)


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
    """The run with the median whole-process wall; time to first trial, efficiency and what
    the run found (`_retrain`) as medians (and ranges) over all the runs, each on its own."""
    walls = sorted(rows, key=lambda r: r["wall"])
    middle = walls[(len(walls) - 1) // 2]
    of_runs = {key: _range([r[key] for r in rows])
               for key in ("first_trial_after", "efficiency", "retrained")}  # fmt: skip
    pace = sum(r["epochs"] for r in rows) / sum(r["wall"] for r in rows)  # all runs' epochs/s
    return {**middle, "spread": (walls[0]["wall"], walls[-1]["wall"]), "of_runs": of_runs,
            "pace": pace}  # fmt: skip


def _range(values: list[float]) -> tuple[float, float, float]:
    """Median, lowest, highest."""
    return statistics.median(values), min(values), max(values)


def _table(medians: dict[str, dict[str, Any]]) -> Table:
    table = Table("system", "whole process (min-max)", "first trial after, median (min-max)",
                  "epochs", "epochs/s", "epochs/s, all runs", "best val",
                  f"best config on {len(w.RETRAIN_SEEDS)} new seeds, median (min-max)",
                  "efficiency, median (min-max)",
                  title=f"{w.TRIALS} trials x <= {w.EPOCHS} epochs, {w.SLOTS} at a time, "
                  "MNIST-1D 3,200/800: median run (first trial, new seeds, efficiency: "
                  "all runs)")  # fmt: skip
    for name, row in medians.items():
        low, high = row["spread"]
        first, efficiency = row["of_runs"]["first_trial_after"], row["of_runs"]["efficiency"]
        again = row["of_runs"]["retrained"]
        table.add_row(f"{name}: {row['system']}", f"{row['wall']:.1f} s ({low:.1f}-{high:.1f})",
                      "{:.2f} s ({:.2f}-{:.2f})".format(*first), str(row["epochs"]),
                      f"{row['epochs'] / row['wall']:.1f}", f"{row['pace']:.1f}",
                      f"{row['best_val']:.3f}", "{:.3f} ({:.3f}-{:.3f})".format(*again),
                      "{:.2f} ({:.2f}-{:.2f})".format(*efficiency))  # fmt: skip
    ours = {n: r for n, r in medians.items() if n.startswith("caviar")}
    theirs = {n: r for n, r in medians.items() if not n.startswith("caviar")}
    for mine, m in ours.items():
        for peer, p in theirs.items():
            first = m["of_runs"]["first_trial_after"][0] / p["of_runs"]["first_trial_after"][0]
            ratios = [f"{mine} / {peer}", f"{m['wall'] / p['wall']:.2f}x", f"{first:.2f}x"]
            table.add_row(*ratios, *[""] * (len(table.columns) - len(ratios)))
    return table
