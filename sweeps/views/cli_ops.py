"""`caviar retest`, `caviar retune`, `caviar schedule`: keep a champion fresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from caviar.sweeps.views.app import console, errors, open_sweep, user_errors
from caviar.sweeps.views.options import AsJson, RayAddress, RunDir, SpecArg, Storage, TrackingUri


def retest(
    spec: SpecArg,
    as_json: AsJson = False,
    run_dir: RunDir = Path("runs"),
    tracking_uri: TrackingUri = None,
    ray_address: RayAddress = None,
) -> None:
    """Retrain the champion's configuration on the data as it is now and judge it.

    Exit code 0: fresh; 3: stale (re-tune); 2: bad input."""
    from caviar.sweeps.ops.retest import as_json as verdict_json
    from caviar.sweeps.ops.retest import retest as run_retest

    with user_errors():
        loaded, where = open_sweep(spec, run_dir, tracking_uri=tracking_uri)
        out = errors if as_json else console  # keep stdout for the JSON
        verdict = run_retest(loaded, where.tracking, run_dir, ray_address, out)
    if as_json:
        print(verdict_json(verdict))
    else:
        scores = ", ".join(f"{s:.4f}" for s in verdict.retest["scores"])
        console.print(
            f"champion v{verdict.champion['version']}: {verdict.champion['score']:.4f} then, "
            f"now {scores}",
            highlight=False,
        )
        colour = "red" if verdict.stale else "green"
        console.print(f"[{colour}]{verdict.verdict}[/{colour}]", *verdict.reasons, sep="\n  ")
    raise typer.Exit(3 if verdict.stale else 0)


def retune(
    spec: SpecArg,
    as_json: AsJson = False,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    ray_address: RayAddress = None,
) -> None:
    """A warm-started sweep on the current data; replaces the champion only if beaten."""
    from caviar.sweeps.ops.retune import retune as run_retune

    with user_errors():
        loaded, where = open_sweep(spec, run_dir, storage, tracking_uri)
        result = run_retune(loaded, where, ray_address, errors if as_json else console)
    summary = result.summary()
    if as_json:
        print(json.dumps(summary))
        return
    now = summary["incumbent"]["score_now"]
    console.print(
        f"champion v{summary['incumbent']['version']} scores "
        f"{'n/a' if now is None else f'{now:.4f}'} on the current data; best re-tuned trial "
        f"{summary['best']['trial']}: {summary['best']['value']:.4f} -> "
        + ("[green]new champion registered[/green]" if result.replaced else "champion kept"),
        highlight=False,
    )


def schedule(
    specs: Annotated[list[Path], typer.Argument(help="Sweep specs to re-test on their schedules.")],
    run_dir: RunDir = Path("runs"),
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray dashboard address (http://HEAD:8265): submit each run as a Ray job.",
        ),
    ] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Run re-tests on each spec's `retune.schedule`, and a re-tune when one says stale.

    Jobs persist in RUN_DIR/schedule.db: a restarted scheduler picks them up, and runs missed
    while it was down run once. Runs of one sweep never overlap. Ctrl-C stops it."""
    from caviar.sweeps.ops.schedule import run_scheduler

    options = {"storage": storage, "tracking_uri": tracking_uri}
    with user_errors():
        if ray_address and not (storage and tracking_uri):
            console.print(
                "[yellow]Ray jobs run in a temporary folder on the cluster: give --storage and "
                "--tracking-uri so studies and results outlive each job[/yellow]"
            )
        run_scheduler(specs, run_dir, ray_address, console, options=options)
