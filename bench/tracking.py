"""MLflow's share of sweep wall time, for the shipped specs, with the local SQLite store and
with a tracking server (the goal is under 5%)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import requests
import typer
from rich.console import Console
from rich.table import Table

from bench.app import app
from caviar.cluster.runtime import ray_session
from caviar.sweeps.launch import Locations, run_sweep


@app.command()
def tracking(
    specs: Annotated[list[Path] | None, typer.Argument(help="Specs to sweep.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the stores.")] = Path("runs/bench-tracking"),
    server: Annotated[bool, typer.Option(help="Also log to a local MLflow server.")] = True,
) -> None:
    """Time spent in MLflow calls as a share of each sweep's wall time (goal: under 5%)."""
    console = Console()
    chosen = specs or sorted(Path("sweeps/specs").glob("*.yaml"))  # every shipped spec
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
