"""Stages of a sweep: each with its own budget, sampler, pruner and epoch budget.

Coarse to fine: the first stage searches the spec's full ranges; each later stage searches the
box around the best trials of the stages before it (`narrow`) and starts from the earlier trials
inside that box (`carried_trials`): they count as its first observations without being trained
again. A stage with `narrow: false` searches the full ranges again. Each stage has its own
Optuna study, because changing a parameter's range inside one study misleads TPE
(optuna#1553).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from sweeps.space import SearchSpace
from sweeps.spec import Direction, PrunerName, PrunerSpec, SamplerName, StageSpec, SweepSpec
from sweeps.studies import CARRIED_FROM, MLFLOW_RUN_KEY, uses_budget

# QMCSampler has been "experimental" since Optuna 3.0; the warning says nothing to a user.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class StagePlan:
    """What one stage runs: `trials` trials of `epochs` epochs each over `space`."""

    index: int
    name: str
    trials: int
    epochs: int
    spec: StageSpec
    space: SearchSpace


def plan_stages(spec: SweepSpec) -> list[StagePlan]:
    """Stages over the full space; the driver narrows each later stage's space when it starts."""
    return [
        StagePlan(
            index=i,
            name=stage.name,
            trials=stage.trials,
            epochs=spec.stage_epochs(stage),
            spec=stage,
            space=spec.search_space,
        )
        for i, stage in enumerate(spec.stages)
    ]


def best_trials(
    trials: list[FrozenTrial], keep_top: float, direction: Direction
) -> list[FrozenTrial]:
    """The best complete trials: `keep_top` as a count, or as a share (at least one) of the
    stage's own finished trials."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if direction == "maximize" else 1.0
    complete.sort(key=lambda t: sign * float(t.value or 0.0))
    if keep_top >= 1:
        count = int(keep_top)
    else:
        count = max(1, round(keep_top * sum(uses_budget(t) for t in trials)))
    return complete[:count]


def narrow(space: SearchSpace, kept: list[FrozenTrial], margin: float) -> SearchSpace:
    """The box around `kept` trials; the whole `space` if none was kept."""
    return space.narrow([t.params for t in kept], margin) if kept else space


def carried_trials(trials: list[tuple[str, FrozenTrial]], space: SearchSpace) -> list[FrozenTrial]:
    """Copies of earlier (stage, trial)s that completed inside `space`, for `Study.add_trials`."""
    distributions = space.distributions()
    carried = []
    for stage, t in trials:
        if t.state is not TrialState.COMPLETE or t.value is None or not space.contains(t.params):
            continue
        attrs = {CARRIED_FROM: f"{stage}#{t.number}"}
        if MLFLOW_RUN_KEY in t.user_attrs:
            attrs[MLFLOW_RUN_KEY] = t.user_attrs[MLFLOW_RUN_KEY]
        carried.append(
            optuna.trial.create_trial(
                params={name: t.params[name] for name in distributions},
                distributions=distributions,
                value=t.value,
                intermediate_values=dict(t.intermediate_values),
                user_attrs=attrs,
            )
        )
    return carried


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its `Study.stop()` once the grid is used up: that call only
    works inside `Study.optimize`, and here the stage's budget ends the stage."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def make_sampler(plan: StagePlan, seed: int) -> optuna.samplers.BaseSampler:
    """The stage's sampler, seeded per stage so that stages do not repeat each other's draws."""
    seed = seed * 1000 + plan.index
    kind = plan.spec.sampler
    if kind is SamplerName.QMC:
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
        )
    if kind is SamplerName.TPE:
        # constant_liar: trials still running count as bad guesses, so parallel asks spread out.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(2, plan.trials // 4)), constant_liar=True
        )
    if kind is SamplerName.GRID:
        return _GridSampler(plan.space.grid(plan.spec.grid_points), seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(pruner: PrunerSpec, epochs: int) -> BasePruner:
    if pruner.kind is PrunerName.MEDIAN:
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs
        )
    if pruner.kind is PrunerName.SUCCESSIVE_HALVING:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_epochs, reduction_factor=pruner.reduction_factor
        )
    if pruner.kind is PrunerName.HYPERBAND:
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_epochs,
            max_resource=epochs,
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.NopPruner()
