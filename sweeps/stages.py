"""Stages of a sweep: each with its own budget, sampler, pruner and epoch budget."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner

from sweeps.space import SearchSpace
from sweeps.spec import PrunerName, PrunerSpec, SamplerName, StageSpec, SweepSpec


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
        return optuna.samplers.GridSampler(plan.space.grid(plan.spec.grid_points), seed=seed)
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
