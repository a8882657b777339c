"""How much faster packed trials train: epochs per second of K trials trained one after
another (each its own `Trainer`, as separate trials run on one worker) against the same K
trials packed into one `PackedTrainer`, on one CPU thread, and whether their curves agree.

`python -m bench packing` (`make bench-packing`): MNIST-1D (the peers benchmark's split,
3,200 training samples), the BN-MLP of the peers benchmark (2 layers of width 32 and of 128,
batch 128, SGD with momentum) and the conv family (cnn1d, 2 blocks x 16 channels), K = 1, 4,
16, 64, each timed `--rounds` times (alone, then packed, in turn) for the median. The mlp
packs as batched matrix products, cnn1d as grouped convolutions.

Then the peers benchmark's sweep end to end (`bench.peers`: 40 TPE trials with successive
halving, six parameters, two workers), each in a fresh process, with trials alone and packed
`--sweep-packs` at a time on each worker, the shape parameters drawn once per pack.
"""

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

# The packing gain shrinks as one member's matrix products grow: a width of 32 is what
# packing is for (a small network leaves most of a core idle), 128 the peers' default width.
FAMILIES = {
    "mlp, width 32": {"hidden_units": 32, "layers": 2},
    "mlp, width 128": {"hidden_units": 128, "layers": 2},
    "cnn1d": {"family": "cnn1d", "channels": 16, "blocks": 2},
}


@app.command()
def packing(
    out: Annotated[Path, typer.Option(help="Folder for results.json.")] = Path(
        "runs/bench-packing"
    ),
    sizes: Annotated[str, typer.Option(help="Pack sizes K, comma-separated.")] = "1,4,16,64",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs timed per trial.")] = 2,
    rounds: Annotated[
        int, typer.Option(min=1, help="Timings of each K, alone and packed in turn; the median.")
    ] = 3,
    sweep_packs: Annotated[
        str, typer.Option(help="Pack sizes of the end-to-end sweep (1: alone); '' skips it.")
    ] = "1,4,8",
    repeats: Annotated[int, typer.Option(min=1, help="Sweeps per pack size; the median.")] = 3,
) -> None:
    """Epochs per second, K trials one after another vs packed into one model."""
    import torch

    from caviar.models.data import build_dataset

    torch.set_num_threads(1)
    data = build_dataset(_source())
    _measure(data, "cnn1d", 2, 1, 1)  # first calls (allocator, kernels) are not timed
    rows = []
    for family in FAMILIES:
        for k in (int(s) for s in sizes.split(",")):
            rows.append(row := _measure(data, family, k, epochs, rounds))
            Console().print(f"{family}, K = {k}: {row['separate']:.1f} epochs/s one after "
                            f"another, {row['packed']:.1f} packed")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    table = Table("family", "K", "one after another", "packed", "speed-up",
                  "largest |val loss difference|",
                  title=f"epochs per second, one CPU thread, MNIST-1D 3,200 train, median of "
                        f"{rounds} timings")  # fmt: skip
    for r in rows:
        table.add_row(r["family"], str(r["k"]), f"{r['separate']:.1f}", f"{r['packed']:.1f}",
                      f"{r['packed'] / r['separate']:.2f}x", f"{r['difference']:.1e}")  # fmt: skip
    Console().print(table)
    if sweep_packs:
        _sweeps(out, [int(k) for k in sweep_packs.split(",")], repeats)


def _sweeps(out: Path, packs: list[int], repeats: int) -> None:
    """The peers' workload as caviar sweeps, trials alone and packed: the median run each."""
    runs = {k: [_sweep(out, k, i) for i in range(repeats)] for k in packs}
    (out / "sweeps.json").write_text(json.dumps(runs, indent=2))
    table = Table("pack", "whole process", "trial phase", "epochs", "epochs/s", "best val",
                  title=f"end-to-end sweep, {w.TRIALS} trials, {w.SLOTS} workers, median of "
                        f"{repeats}")  # fmt: skip
    for k, rows in runs.items():
        row = sorted(rows, key=lambda r: r["epochs_per_second"])[len(rows) // 2]
        table.add_row("alone" if k == 1 else str(k), f"{row['wall']:.1f} s",
                      f"{row['phase']:.1f} s", str(row["epochs"]),
                      f"{row['epochs_per_second']:.1f}", f"{row['best_val']:.3f}")  # fmt: skip
    Console().print(table)


def _sweep(out: Path, pack: int, index: int) -> dict[str, Any]:
    label = f"sweep-pack{pack}-{index}"
    result = out / f"{label}.json"
    shutil.rmtree(out / label, ignore_errors=True)  # a fresh sweep, not the last run's resumed
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    started = time.time()
    command = [sys.executable, "-m", "bench.peers.run_caviar", str(result), str(out / label),
               "caviar", str(pack)]  # fmt: skip
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    row = json.loads(result.read_text())
    phase = row["last_trial"] - row["first_trial"]
    row.update(pack=pack, wall=time.time() - started, phase=phase,
               epochs_per_second=row["epochs"] / phase)  # fmt: skip
    rate, best = row["epochs_per_second"], row["best_val"]
    Console().print(f"{label}: {row['wall']:.1f} s, {row['epochs']} epochs, "
                    f"{rate:.1f} epochs/s, best {best:.3f}")  # fmt: skip
    return row


def _source() -> Any:
    from caviar.models.sources import Mnist1dSource

    return Mnist1dSource(source="mnist1d", samples=w.SAMPLES, seed=w.DATA_SEED,
                         val_fraction=1 / 6, test_fraction=1 / 6)  # fmt: skip


def _measure(data: Any, family: str, k: int, epochs: int, rounds: int) -> dict[str, Any]:
    """Epochs per second of the K trials alone and packed: `rounds` timings of each, taken
    in turn, and the median of each (at K = 16 one timing is a fraction of a second, and on
    a shared machine a single one can be off by 10%)."""
    from caviar.models.config import TrainConfig
    from caviar.models.families import model_config

    model = model_config(FAMILIES[family])
    trains = {
        i: TrainConfig(
            epochs=epochs, batch_size=128, lr=0.02 * (1 + i % 5), momentum=0.9, seed=i, device="cpu"
        )
        for i in range(k)
    }
    separate, packed = [], []
    for _ in range(rounds):
        seconds, alone = _alone(data, model, trains)
        separate.append(k * epochs / seconds)
        seconds, together = _packed(data, model, trains)
        packed.append(k * epochs / seconds)
    difference = max(abs(together[e][i].val_loss - alone[i][e]) for i in trains
                     for e in range(epochs))  # fmt: skip
    return {"family": family, "k": k, "separate": statistics.median(separate),
            "packed": statistics.median(packed), "difference": difference,
            "rounds": {"separate": separate, "packed": packed}}  # fmt: skip


def _alone(data: Any, model: Any, trains: dict[int, Any]) -> tuple[float, dict[int, list[float]]]:
    """Seconds to train each trial on its own `Trainer`, one after another, and its curve."""
    from caviar.models.train import Trainer

    started = time.perf_counter()
    curves = {}
    for i, train in trains.items():
        trainer = Trainer(data, model, train, threads=1)
        curves[i] = [trainer.run_epoch().val_loss for _ in range(train.epochs)]
    return time.perf_counter() - started, curves


def _packed(data: Any, model: Any, trains: dict[int, Any]) -> tuple[float, list[Any]]:
    """Seconds to train the trials as one pack, and each epoch's metrics by member."""
    from caviar.models.packed import PackedTrainer

    started = time.perf_counter()
    packed = PackedTrainer(data, model, trains, threads=1)
    epochs = [packed.run_epoch() for _ in range(next(iter(trains.values())).epochs)]
    return time.perf_counter() - started, epochs
