"""Checks across a spec's sections, run when it is validated: each raises `ValueError` with a
message that starts with the field it is about (the spec loader adds the file)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from caviar.models.config import ModelConfig, TrainConfig
from caviar.sweeps.search.choice_param import ChoiceParam
from caviar.sweeps.search.params import IntParam

if TYPE_CHECKING:
    from caviar.sweeps.search.spec import StageSpec, SweepSpec

# Config fields that describe the run rather than the network being searched.
NOT_SEARCHABLE = {"family", "epochs", "seed", "device"}


def searchable(model: ModelConfig) -> dict[str, Any]:
    """Name -> field of what a spec with this model family may search: the family's fields and
    the training fields, less what describes the run."""
    fields = {**type(model).model_fields, **TrainConfig.model_fields}
    return {name: f for name, f in fields.items() if name not in NOT_SEARCHABLE}


def check_space(spec: SweepSpec) -> None:
    """Every searched name is a hyperparameter, its scale fits the field's type, and both ends
    of its range (or every choice) make a valid config."""
    fields = searchable(spec.model)
    for name, param in spec.space.items():
        if name not in fields:
            known = ", ".join(fields)
            raise ValueError(
                f"space.{name}: unknown hyperparameter for the {spec.model.family} family; "
                f"expected one of {known}"
            )
        _check_scale_fits(name, param, fields[name].annotation)
        extremes = param.choices if isinstance(param, ChoiceParam) else [param.low, param.high]
        for value in extremes:
            problem = _config_problem(spec, {name: param.to_value(param.to_internal(value))})
            if problem:
                raise ValueError(f"space.{name}: {value!r} is not a valid {name}: {problem}")


def _check_scale_fits(name: str, param: Any, kind: Any) -> None:
    if isinstance(param, ChoiceParam):
        return
    scale = getattr(param, "scale", "")
    if kind is int and not isinstance(param, IntParam):
        raise ValueError(
            f"space.{name}: a `{scale}` scale draws real numbers but {name} is a whole number; "
            "use `scale: int` (with `log: true` for log spacing) or `choices`"
        )
    if kind not in (int, float):
        raise ValueError(f"space.{name}: {name} is not a number; list its values as `choices`")


def check_stages(spec: SweepSpec) -> None:
    """Stage names are distinct; queued configurations lie in the space; pruners can prune."""
    names = [stage.name for stage in spec.stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stages: names must be distinct, but got {names}")
    for i, stage in enumerate(spec.stages):
        for j, values in enumerate(stage.enqueue):
            _check_queued(spec, f"stages[{i}].enqueue[{j}]", values)
        _check_pruner(f"stages[{i}].pruner", stage, spec.stage_epochs(stage))
        if stage.shape_per_pack and spec.search_pack < 2:
            why = (
                f"parallel.pack is {spec.parallel.pack}; set parallel.pack to 2 or more "
                "(trials per pack)"
                if spec.parallel.pack < 2
                else "the network has dropout, whose masks a pack would draw differently"
            )
            raise ValueError(f"stages[{i}].shape_per_pack: packs trials, but {why}")
        if stage.shape_per_pack and stage.sampler == "grid":
            raise ValueError(
                f"stages[{i}].shape_per_pack: a grid stage evaluates its points as they are; "
                "drop shape_per_pack or use the random, qmc or tpe sampler"
            )


def _check_queued(spec: SweepSpec, where: str, values: dict[str, Any]) -> None:
    unknown = set(values) - set(spec.space)
    if unknown:
        raise ValueError(
            f"{where}: {sorted(unknown)} are not searched; expected keys of space: "
            f"{sorted(spec.space)}"
        )
    for name, value in values.items():
        param = spec.space[name]
        try:
            inside = param.contains(param.to_internal(value))
        except (TypeError, ValueError):
            inside = False
        if not inside:
            raise ValueError(f"{where}.{name}: {value!r} is outside space.{name} {param.bounds()}")
    problem = _config_problem(spec, values)
    if problem:
        raise ValueError(f"{where}: not a valid configuration: {problem}")


def _check_pruner(where: str, stage: StageSpec, epochs: int) -> None:
    """A pruner set so that it can never stop a trial is a mistake, not a choice."""
    kind, pruner = stage.pruner.kind.value, stage.pruner
    # Pruning is asked after epochs 1 .. epochs-1 (the last epoch completes the trial).
    if kind == "median" and pruner.warmup_epochs > epochs - 2:
        raise ValueError(
            f"{where}.warmup_epochs: {pruner.warmup_epochs} leaves no epoch at which a trial of "
            f"{epochs} epochs could be pruned; expected at most {max(epochs - 2, 0)}"
        )
    if kind in ("successive_halving", "hyperband") and pruner.min_epochs >= epochs:
        raise ValueError(
            f"{where}.min_epochs: {pruner.min_epochs} is not below the stage's {epochs} epochs, "
            f"so no trial could be stopped early; expected at most {epochs - 1}"
        )


def _config_problem(spec: SweepSpec, values: dict[str, Any]) -> str | None:
    try:
        spec.configs(values)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"])
    return None
