"""`caviar`: run, inspect and babysit sweeps.

Every command takes `--run-dir` (default `runs/`), where the Optuna studies, the MLflow store
and the locks live. Problems the user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from models.errors import CaviarError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distributed coarse-to-fine hyperparameter sweeps for PyTorch.",
)
console = Console()
errors = Console(stderr=True)

SpecArg = Annotated[Path, typer.Argument(help="The sweep spec (YAML).", show_default=False)]
RunDir = Annotated[
    Path, typer.Option("--run-dir", help="Where studies, the MLflow store and locks live.")
]
Storage = Annotated[
    str | None,
    typer.Option("--storage", help="Optuna storage URL (default: SQLite in the run directory)."),
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join this Ray cluster instead of starting a local one."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help="MLflow tracking URI (default: SQLite in the run directory)."
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """A `CaviarError` becomes one line on stderr and exit code 2; Ctrl-C exits with 130."""
    try:
        yield
    except CaviarError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        errors.print(
            "interrupted; running trials were marked interrupted and will be re-run "
            "when the same command is started again"
        )
        raise typer.Exit(130) from None


@app.command()
def sweep(
    spec: SpecArg,
    run_dir: RunDir = Path("runs"),
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Join this Ray cluster instead of starting a local one."
        ),
    ] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Run a sweep, or continue it until its budget is spent."""
    from sweeps.launch import Locations, run_sweep

    with user_errors():
        outcome = run_sweep(spec, Locations(run_dir, storage, tracking_uri), ray_address, console)
    best = outcome.best
    console.print(
        f"{outcome.seconds:.1f} s, of which MLflow {outcome.mlflow_seconds:.2f} s "
        f"({outcome.mlflow_share:.1%})",
        highlight=False,
    )
    if best.value is None:
        console.print("no trial completed")
        return
    console.print(
        f"[bold green]best[/bold green] {best.value:.4f} from {best.stage} trial {best.number}: "
        + ", ".join(f"{k}={_short(v)}" for k, v in best.params.items()),
        highlight=False,
    )


@app.command()
def validate(spec: SpecArg) -> None:
    """Check a spec and its data without running anything."""
    from models.data import build_dataset
    from sweeps.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        data = build_dataset(loaded.data)
    table = Table("hyperparameter", "scale", "range", title=f"{spec}: sweep {loaded.name}")
    for name, param in loaded.space.items():
        scale = getattr(param, "scale", "choices")
        span = str(param.choices) if scale == "choices" else f"[{param.low}, {param.high}]"  # type: ignore[union-attr]
        table.add_row(name, scale, span)
    console.print(table)
    for stage in loaded.stages:
        console.print(
            f"stage {stage.name}: {stage.trials} trials, {stage.sampler.value} sampler, "
            f"{stage.pruner.kind.value} pruner, {loaded.stage_epochs(stage)} epochs"
        )
    console.print(
        f"data: {loaded.data.source}, {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} "
        f"train/val/test samples, {data.n_features} features, {data.n_classes} classes"
    )
    console.print("[green]valid[/green]")


@app.command()
def train(
    spec: SpecArg,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Hyperparameter override, KEY=VALUE; repeatable."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (default: the spec's train.epochs).")
    ] = None,
) -> None:
    """Train one model with the spec's settings and print its learning curve."""
    from models.data import build_dataset
    from models.train import Decision, EpochMetrics, fit
    from sweeps.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        values = _parse_overrides(overrides or [])
        try:
            model, config = loaded.configs(values, epochs=epochs)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise CaviarError(f"--set {problem['loc'][0]}: {problem['msg']}") from None
        data = build_dataset(loaded.data)
        for section, part in (("model", model), ("train", config)):
            shown = " ".join(f"{k}={v}" for k, v in part.model_dump(mode="json").items())
            console.print(f"{section}: {shown}", highlight=False, soft_wrap=True)
        console.print(
            f"{'epoch':>5}  {'train_loss':>10}  {'val_loss':>9}  {'val_acc':>7}  {'lr':>9}"
            f"  {'s':>5}"
        )

        def show(m: EpochMetrics) -> Decision:
            console.print(
                f"{m.epoch:>5}  {m.train_loss:>10.4f}  {m.val_loss:>9.4f}  {m.val_accuracy:>7.4f}  "
                f"{m.lr:>9.3g}  {m.seconds:>5.2f}  {_bar(m.val_accuracy)}",
                highlight=False,
            )
            return Decision.CONTINUE

        outcome, history, _ = fit(data, model, config, show)
    best = max(history, key=lambda m: m.val_accuracy)
    console.print(
        f"{outcome.value}: final val_accuracy {history[-1].val_accuracy:.4f}, "
        f"best {best.val_accuracy:.4f} at epoch {best.epoch}"
    )
    if outcome.value == "diverged":
        raise typer.Exit(1)


@app.command()
def status(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Show how far a sweep has got and its best trial."""
    from sweeps.launch import Locations
    from sweeps.space import format_box
    from sweeps.spec import load_spec
    from sweeps.status import sweep_status

    with user_errors():
        loaded = load_spec(spec)
        report = sweep_status(loaded, Locations(run_dir, storage).storage_url)
    if as_json:
        print(json.dumps(report))
        return
    table = Table(
        "stage",
        "budget",
        "complete",
        "pruned",
        "failed",
        "running",
        "box",
        title=f"sweep {loaded.name}",
    )
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
            f"best {loaded.objective.metric} {best['value']:.4f}: "
            + ", ".join(f"{k}={_short(v)}" for k, v in best["params"].items()),
            highlight=False,
        )


@app.command()
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
    from sweeps.launch import Locations
    from sweeps.report import build_report, load_stages
    from sweeps.spec import load_spec
    from sweeps.tracking import attach_to_sweep

    with user_errors():
        loaded = load_spec(spec)
        where = Locations(run_dir, storage, tracking_uri)
        stages = load_stages(loaded, where.storage_url)
        if not stages:
            raise CaviarError(
                f"sweep '{loaded.name}' has no trials in {run_dir}; run `caviar sweep {spec}` first"
            )
        target = out or run_dir / "reports" / f"{loaded.name}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(build_report(loaded, stages))
        run_id = attach_to_sweep(where.tracking, loaded.experiment_name, loaded.name, target)
    console.print(f"report written to {target}", highlight=False)
    if run_id:
        console.print(f"attached to MLflow run {run_id}", highlight=False)


@app.command()
def retest(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    run_dir: RunDir = Path("runs"),
    tracking_uri: TrackingUri = None,
    ray_address: RayAddress = None,
) -> None:
    """Retrain the champion's configuration on the data as it is now and judge it.

    Exit code 0: fresh; 3: stale (re-tune); 2: bad input."""
    from sweeps.launch import Locations
    from sweeps.retest import as_json as verdict_json
    from sweeps.retest import retest as run_retest
    from sweeps.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        where = Locations(run_dir, tracking_uri=tracking_uri)
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


@app.command()
def retune(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    ray_address: RayAddress = None,
) -> None:
    """A warm-started sweep on the current data; replaces the champion only if beaten."""
    from sweeps.launch import Locations
    from sweeps.retune import retune as run_retune
    from sweeps.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        where = Locations(run_dir, storage, tracking_uri)
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


@app.command()
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
    from sweeps.schedule import run_scheduler

    options = {"storage": storage, "tracking_uri": tracking_uri}
    with user_errors():
        if ray_address and not (storage and tracking_uri):
            console.print(
                "[yellow]Ray jobs run in a temporary folder on the cluster: give --storage and "
                "--tracking-uri so studies and results outlive each job[/yellow]"
            )
        run_scheduler(specs, run_dir, ray_address, console, options=options)


@app.command()
def sync(
    spec: SpecArg,
    run_dir: RunDir = Path("runs"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Send MLflow writes that were kept on disk while the tracking server was unreachable."""
    from sweeps.mlflow_writer import MlflowWriter
    from sweeps.spec import load_spec
    from sweeps.studies import sweep_lock
    from sweeps.tracking import spool_dir

    with user_errors():
        loaded = load_spec(spec)
        folder = spool_dir(run_dir, loaded.name)
        target = tracking_uri or MlflowWriter.spooled_for(folder)
        if target is None:
            console.print(f"nothing waiting for MLflow in {folder}")
            return
        with sweep_lock(run_dir, loaded.name):  # the sweep's driver is the only other writer
            writer = MlflowWriter(target, loaded.name, folder)
            waiting = writer.pending
            left = writer.sync()
    if left:
        errors.print(f"MLflow at {target} is still unreachable; {left} of {waiting} writes wait")
        raise typer.Exit(1)
    console.print(f"sent {waiting} writes to {target}", highlight=False)


@app.command()
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
) -> None:
    """Serve the MLflow UI (a real `mlflow server`) over the run directory's store.

    It is also a tracking server: sweeps on other machines log to it with
    `--tracking-uri http://HOST:PORT`; their artifacts land in RUN_DIR/artifacts."""
    from sweeps.tracking import default_tracking_uri

    with user_errors():
        _check_port_free(host, port)
        backend = store or default_tracking_uri(run_dir)
        if store is None and not (run_dir / "mlflow.db").exists():
            console.print(f"[yellow]no sweep recorded in {run_dir} yet: run `make sweep`[/yellow]")
        artifacts = (run_dir / "artifacts").resolve()
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            "--artifacts-destination", artifacts.as_uri(),
            "--host", host,
            "--port", str(port),
        ]  # fmt: skip
        console.print(f"MLflow UI on http://{host}:{port} (store {backend}); Ctrl-C stops it")
        try:
            raise typer.Exit(subprocess.call(command))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    from models.net import ModelConfig
    from models.train import TrainConfig

    known = {*ModelConfig.model_fields, *TrainConfig.model_fields}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise CaviarError(f"--set {pair}: expected KEY=VALUE")
        if key not in known:
            raise CaviarError(
                f"--set {key}: unknown hyperparameter; expected one of {', '.join(sorted(known))}"
            )
        values[key] = yaml.safe_load(text)
    return values


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


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _bar(fraction: float, width: int = 20) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "·" * (width - filled)


def main() -> None:
    app()
