"""`caviar sweep`, `caviar validate`, `caviar train`, `caviar plugins`: run a sweep, check a
spec, train one model, list what can be trained and loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from caviar.models.errors import CaviarError
from caviar.sweeps.views.app import console, errors, short, user_errors
from caviar.sweeps.views.options import RunDir, SpecArg, Storage, TrackingUri


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
    from caviar.sweeps.launch import Locations, run_sweep

    with user_errors():
        outcome = run_sweep(spec, Locations(run_dir, storage, tracking_uri), ray_address, console)
    best = outcome.best
    usage = outcome.result.usage
    console.print(
        f"{outcome.seconds:.1f} s, of which MLflow {outcome.mlflow_seconds:.2f} s "
        f"({outcome.mlflow_share:.1%}); {usage.epochs} epochs trained, workers busy "
        f"{usage.efficiency:.0%} of the trial phase",
        highlight=False,
    )
    if best.value is None:
        console.print("no trial completed")
        return
    console.print(
        f"[bold green]best[/bold green] {best.value:.4f} from {best.stage} trial {best.number}: "
        + ", ".join(f"{k}={short(v)}" for k, v in best.params.items()),
        highlight=False,
    )


def validate(spec: SpecArg) -> None:
    """Check a spec and its data without running anything."""
    from caviar.models.data import build_dataset
    from caviar.sweeps.search.specfile import load_spec

    with user_errors():
        loaded = load_spec(spec)
        data = build_dataset(loaded.data)
        if loaded.retune.data is not None:  # what re-tests and re-tunes read
            from caviar.sweeps.ops.retest import current_data

            current_data(loaded)
    table = Table("hyperparameter", "scale", "range", title=f"{spec}: sweep {loaded.name}")
    for name, param in loaded.space.items():
        scale = getattr(param, "scale", "choices")
        span = str(param.choices) if scale == "choices" else f"[{param.low}, {param.high}]"  # type: ignore[union-attr]
        table.add_row(name, scale, span)
    console.print(table)
    pack = loaded.search_pack
    for stage in loaded.stages:
        packing = f", up to {pack} packed per worker" if pack > 1 else ""
        packing += " (shapes drawn per pack)" if stage.shape_per_pack else ""
        console.print(
            f"stage {stage.name}: {stage.trials} trials, {stage.sampler.value} sampler, "
            f"{stage.pruner.kind.value} pruner, {loaded.stage_epochs(stage)} epochs{packing}"
        )
    console.print(
        f"data: {loaded.data.source}, {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} "
        f"train/val/test samples, {data.n_features} features, {data.n_classes} classes"
    )
    console.print("[green]valid[/green]")


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
    from caviar.models.data import build_dataset
    from caviar.models.train import fit
    from caviar.sweeps.search.specfile import load_spec

    with user_errors():
        loaded = load_spec(spec)
        values = _parse_overrides(overrides or [], loaded.model)
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
        outcome, history, _ = fit(data, model, config, _show_epoch)
    best = max(history, key=lambda m: m.val_accuracy)
    console.print(
        f"{outcome.value}: final val_accuracy {history[-1].val_accuracy:.4f}, "
        f"best {best.val_accuracy:.4f} at epoch {best.epoch}"
    )
    if outcome.value == "diverged":
        raise typer.Exit(1)


def _show_epoch(m: Any) -> Any:
    """One line of `caviar train`'s learning curve; training always goes on."""
    from caviar.models.train import Decision

    console.print(
        f"{m.epoch:>5}  {m.train_loss:>10.4f}  {m.val_loss:>9.4f}  {m.val_accuracy:>7.4f}  "
        f"{m.lr:>9.3g}  {m.seconds:>5.2f}  {_bar(m.val_accuracy)}",
        highlight=False,
    )
    return Decision.CONTINUE


def _parse_overrides(pairs: list[str], model: Any) -> dict[str, Any]:
    """KEY=VALUE pairs of `model`'s family fields and the training fields (YAML values)."""
    from caviar.models.config import TrainConfig

    known = {*type(model).model_fields, *TrainConfig.model_fields} - {"family"}
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


def _bar(fraction: float, width: int = 20) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "·" * (width - filled)


def plugins() -> None:
    """List the model families and data sources this installation knows, and where each
    comes from (built in, or the installed package that registered it)."""
    from caviar.models.data import SourceConfig
    from caviar.models.plugins import broken, data_sources, model_families

    common = set(SourceConfig.model_fields)  # every source's split settings
    for title, registry, field in (
        ("model families (model.family)", model_families(), "family"),
        ("data sources (data.source; all also take val_fraction, test_fraction, split_seed)",
         data_sources(), "source"),
    ):  # fmt: skip
        table = Table("name", "from", "fields", title=title)
        for name, entry in registry.items():
            fields = [f for f in entry.plugin.config.model_fields if f != field and f not in common]
            table.add_row(name, entry.origin, ", ".join(fields) or "-")
        console.print(table)
    for left_out in broken():
        errors.print(
            f"{left_out.group} '{left_out.name}' from {left_out.origin} is left out: "
            f"{left_out.reason}",
            highlight=False,
        )
