"""`caviar status`, `caviar report`, `caviar sync`, `caviar ui`: look at a sweep's record."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from caviar.models.errors import CaviarError
from caviar.sweeps.views.app import console, errors, open_sweep, short, user_errors
from caviar.sweeps.views.options import AsJson, RunDir, SpecArg, Storage, TrackingUri
from caviar.sweeps.views.signals import EXIT_CODE, terminated


def status(
    spec: SpecArg,
    as_json: AsJson = False,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Show how far a sweep has got and its best trial."""
    from caviar.sweeps.record.tracking import spool_dir
    from caviar.sweeps.views.status import sweep_status

    with user_errors():
        loaded, where = open_sweep(spec, run_dir, storage)
        report = sweep_status(loaded, where.storage_url, spool_dir(run_dir, loaded.name))
    if as_json:
        print(json.dumps(report))
    else:
        _show_status(report, loaded.objective.metric)


def _show_status(report: dict[str, Any], metric: str) -> None:
    from caviar.sweeps.search.space import format_box

    columns = ("stage", "budget", "complete", "pruned", "failed", "running", "box")
    table = Table(*columns, title=f"sweep {report['name']}")
    for stage in report["stages"]:
        c = stage["trials"]
        table.add_row(
            stage["name"],
            str(stage["budget"]),
            *(str(c[k]) for k in ("complete", "pruned", "failed", "running")),
            format_box(stage["box"]) if stage["box"] else "not started",
        )
    console.print(table)
    best = report["best"]
    if best["value"] is None:
        console.print("no complete trial yet")
    else:
        console.print(
            f"best {metric} {best['value']:.4f} (trial {best['trial']}): "
            + ", ".join(f"{k}={short(v)}" for k, v in best["params"].items()),
            highlight=False,
        )
    _show_selection(report["selection"], metric)
    _show_mlflow(report["mlflow"])


def _show_selection(selection: dict[str, Any] | None, metric: str) -> None:
    if not selection or len(selection["seeds"]) < 2:
        return
    console.print(f"champion chosen by mean {metric} over seeds {selection['seeds']}:")
    for c in selection["contenders"]:
        mark = "  <- champion" if c["trial"] == selection["winner"] else ""
        console.print(f"  {c['trial']:<12} {c['mean']:.4f} ± {c['sd']:.4f}{mark}", highlight=False)


def _show_mlflow(mlflow: dict[str, Any]) -> None:
    if mlflow["waiting"]:
        console.print(f"{mlflow['waiting']} MLflow writes wait on disk: `caviar sync` sends them")
    for reason in mlflow["refused"]:
        errors.print(f"refused by MLflow and set aside: {reason}", highlight=False)


def report(
    spec: SpecArg,
    run_dir: RunDir = Path("runs"),
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file to write (default RUN_DIR/reports/NAME.html)."),
    ] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write the sweep's HTML report and attach it to the sweep's MLflow run."""
    from caviar.sweeps.views.report import build_report
    from caviar.sweeps.views.sweep_trials import load_stages

    with user_errors():
        loaded, where = open_sweep(spec, run_dir, storage, tracking_uri)
        stages = load_stages(loaded, where.storage_url)
        if not stages:
            raise CaviarError(
                f"sweep '{loaded.name}' has no trials in {run_dir}; run `caviar sweep {spec}` first"
            )
        target = out or run_dir / "reports" / f"{loaded.name}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(build_report(loaded, stages))
        console.print(f"report written to {target}", highlight=False)
        _attach_report(loaded, where, target)


def _attach_report(spec: Any, where: Any, path: Path) -> None:
    """Attach the report to the sweep's parent run, through the sweep's journal and under its
    lock; while the sweep runs (its driver holds the lock) the report is only written."""
    from caviar.sweeps.errors import SweepBusy
    from caviar.sweeps.record.tracking import attach_to_sweep, spool_dir
    from caviar.sweeps.search.lock import sweep_lock

    spool = spool_dir(where.run_dir, spec.name)
    try:
        with sweep_lock(where.run_dir, spec.name):
            attached = attach_to_sweep(where.tracking, spec.experiment_name, spec.name, spool, path)
    except SweepBusy:
        console.print("the sweep is running: run `caviar report` again when it ends to attach")
        return
    if attached:
        console.print(f"attached to the sweep's MLflow run in {where.tracking}", highlight=False)


def sync(
    spec: Annotated[
        Path | None,
        typer.Argument(help="Only this spec's sweep and its re-tunes.", show_default=False),
    ] = None,
    run_dir: RunDir = Path("runs"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Send MLflow writes kept on disk while the tracking server was unreachable (every sweep
    of the run directory, re-tunes and re-tests included), and list any it refused."""
    from caviar.sweeps.ops.sync import sync_spools
    from caviar.sweeps.search.specfile import load_spec

    with user_errors():
        sweep = load_spec(spec).name if spec is not None else None
        results = sync_spools(run_dir, sweep, tracking_uri)
    for result in results:
        if result.target is not None:
            console.print(
                f"{result.sweep}: sent {result.sent} writes to {result.target}"
                + (f"; {result.left} still wait: it is still unreachable" if result.left else ""),
                highlight=False,
            )
        for reason in result.refused:
            errors.print(f"{result.sweep}: set aside, refused by MLflow: {reason}", highlight=False)
    if not any(r.target for r in results):
        console.print(f"nothing waiting for MLflow in {run_dir / 'spool'}", highlight=False)
    if any(r.left for r in results):
        raise typer.Exit(1)


def ui(
    run_dir: RunDir = Path("runs"),
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")
    ] = "127.0.0.1",
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="MLflow backend store, e.g. postgresql://... (default: SQLite in RUN_DIR).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes; more serve many sweeps at once.")
    ] = 1,
) -> None:
    """Serve the MLflow UI (a real `mlflow server`) over the run directory's store.

    It is also a tracking server: sweeps on other machines log to it with
    `--tracking-uri http://HOST:PORT`; their artifacts land in RUN_DIR/artifacts."""
    from caviar.sweeps.record.tracking import default_tracking_uri

    with user_errors():
        _check_port_free(host, port)
        backend = store or default_tracking_uri(run_dir)
        if store is None and not (run_dir / "mlflow.db").exists():
            console.print(f"[yellow]no sweep recorded in {run_dir} yet: run `make sweep`[/yellow]")
        command = [*_server_command(run_dir, backend, host, port), "--workers", str(workers)]
        console.print(f"MLflow UI on http://{host}:{port} (store {backend}); Ctrl-C stops it")
        landing = _landing(backend, f"http://{host}:{port}")
        if landing:
            console.print(f"the trials of the latest sweep, compared: {landing}", soft_wrap=True)
        raise typer.Exit(serve(command))


def serve(command: list[str]) -> int:
    """Run the server until it exits, or until Ctrl-C (exit 0) or SIGTERM (exit 143), which
    stop its whole tree: `mlflow server` runs uvicorn in child processes that would otherwise
    be left behind, still listening. A reaper kills the tree if this process is killed."""
    from caviar.cluster.reaper import start_reaper, stop_reaper

    reaper = start_reaper(only_ray=False)
    # The server's job runner (GenAI jobs caviar never submits) costs CPU and slows every
    # request on a small machine; it stays off unless asked for.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, env=env)
    try:
        return server.wait()
    except KeyboardInterrupt as exc:
        _stop_tree(server)
        return EXIT_CODE if terminated(exc) else 0
    finally:
        stop_reaper(reaper)


def _stop_tree(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server and its descendants; SIGKILL to what is left after 10 s."""
    from caviar.cluster.reaper import descendants, kill_all

    tree = {server.pid: "", **descendants(server.pid)}
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    kill_all({pid: t for pid, t in tree.items() if t})  # the children, if any outlived it


def _server_command(run_dir: Path, backend: str, host: str, port: int) -> list[str]:
    """`mlflow server` over `backend`, its artifacts in RUN_DIR/artifacts."""
    artifacts = (run_dir / "artifacts").resolve().as_uri()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", artifacts,
        "--host", host,
        "--port", str(port),
    ]  # fmt: skip


def _landing(backend: str, base: str) -> str | None:
    """The comparison view of the most recently updated sweep in the store (none yet: None)."""
    from mlflow import MlflowClient

    from caviar.sweeps.record.store_template import sqlite_file
    from caviar.sweeps.record.view import VIEW_TAG, landing_url

    local = sqlite_file(backend)
    if local is not None and not Path(local).exists():
        return None
    found = MlflowClient(backend).search_experiments(
        filter_string=f"tags.`{VIEW_TAG}` != ''", order_by=["last_update_time DESC"]
    )
    return landing_url(base, found[0].experiment_id) if found else None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server would: connections of an earlier server in TIME_WAIT do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise CaviarError(
                f"--port {port}: {host}:{port} is already in use; pick another port"
            ) from None
