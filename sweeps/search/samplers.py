"""Each stage's sampler and pruner, built from its spec."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.search.spec import PrunerName, PrunerSpec, SamplerName

if TYPE_CHECKING:
    from caviar.sweeps.search.stages import StagePlan

# QMCSampler has been "experimental" since Optuna 3.0; the warning says nothing to a user.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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


def make_sampler(plan: StagePlan, seed: int, done: int) -> optuna.samplers.BaseSampler:
    """The stage's sampler, seeded per stage so that stages do not repeat each other's draws,
    and per resume (`done`: trials the stage's study already holds) so that a resumed stage
    draws new points instead of its first ones again. Sobol and the grid keep one seed: Optuna
    counts the Sobol points drawn in the study and continues the sequence, and the grid's seed
    fixes which point each grid index is."""
    fixed = seed * 1000 + plan.index
    fresh = int(np.random.SeedSequence([seed, plan.index, done]).generate_state(1)[0])
    kind = plan.spec.sampler
    if kind is SamplerName.QMC:
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=fixed, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=fresh),
        )  # fmt: skip
    if kind is SamplerName.TPE:
        # constant_liar: trials still running count as bad guesses, so parallel asks spread out.
        return optuna.samplers.TPESampler(
            seed=fresh, n_startup_trials=min(10, max(2, plan.trials // 4)), constant_liar=True
        )
    if kind is SamplerName.GRID:
        return _GridSampler(plan.space.grid(plan.spec.grid_points), seed=fixed)
    return optuna.samplers.RandomSampler(seed=fresh)


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


def decision_epochs(pruner: PrunerSpec, epochs: int) -> tuple[int, ...] | None:
    """The epochs after which `pruner` can stop a trial of `epochs` epochs, where they are
    known ahead (None: after any epoch); after the others the trial's worker trains on without
    waiting for the driver. Successive halving decides at its rungs only (`min_epochs` times
    powers of `reduction_factor`), the median pruner from its warm-up on; hyperband's rungs
    depend on each trial's bracket."""
    if pruner.kind is PrunerName.NONE:
        return ()
    if pruner.kind is PrunerName.MEDIAN:
        return tuple(range(max(1, pruner.warmup_epochs), epochs))
    if pruner.kind is PrunerName.SUCCESSIVE_HALVING:
        rungs, rung = [], pruner.min_epochs
        while rung < epochs:
            rungs.append(rung)
            rung *= pruner.reduction_factor
        return tuple(rungs)
    return None
