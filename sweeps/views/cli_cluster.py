"""`caviar cluster up|down|status`: a persistent Ray cluster on this machine for sweeps to join.

Without it every sweep starts an embedded Ray and new workers (seconds of imports); with it,
`caviar sweep` joins the cluster of its run directory and leases workers that stay warm
between sweeps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from caviar.sweeps.views.app import console, user_errors
from caviar.sweeps.views.options import RunDir

cluster_app = typer.Typer(
    no_args_is_help=True,
    help="A persistent local Ray cluster (127.0.0.1, token auth) that sweeps join; warm workers.",
)


@cluster_app.command()
def up(
    run_dir: RunDir = Path("runs"),
    cpus: Annotated[
        int | None, typer.Option("--cpus", min=1, help="CPUs it offers (default: all).")
    ] = None,
) -> None:
    """Start the cluster for RUN_DIR's sweeps (nothing happens if it is up already)."""
    from caviar.cluster.local import start

    with user_errors():
        cluster, started = start(run_dir, cpus or os.cpu_count() or 1)
    verb = "started" if started else "already up"
    console.print(
        f"local Ray cluster {verb} at {cluster.address} ({cluster.cpus} CPUs); "
        f"`caviar sweep ... --run-dir {run_dir}` joins it; `caviar cluster down` stops it",
        highlight=False,
    )


@cluster_app.command()
def down(run_dir: RunDir = Path("runs")) -> None:
    """Stop the cluster and its warm workers."""
    from caviar.cluster.local import stop

    stopped = stop(run_dir)
    if stopped is None:
        console.print(f"no local Ray cluster recorded in {run_dir}")
    else:
        console.print(f"local Ray cluster at {stopped.address} stopped", highlight=False)


@cluster_app.command()
def status(run_dir: RunDir = Path("runs")) -> None:
    """Whether the cluster is up, where, and since when (exit code 1 when it is not)."""
    from caviar.cluster.local import find

    cluster = find(run_dir)
    if cluster is None:
        console.print(f"no local Ray cluster is up for {run_dir}")
        raise typer.Exit(1)
    console.print(
        f"up at {cluster.address} since {cluster.started_at}: {cluster.cpus} CPUs, "
        f"process {cluster.pid}",
        highlight=False,
    )
