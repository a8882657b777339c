"""The one definition of "best", used by the driver, status, the report, re-tunes and the
champion: the objective first, then the lower final validation loss, then the earlier trial
(stage, then number). Batch-norm networks are noisy and a small validation split makes ties
common; without a rule, each view would pick its own winner among equals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.studies import uses_budget

VAL_LOSS = "val_loss"  # trial attribute: a complete trial's final validation loss
Staged = tuple[int, FrozenTrial]  # (stage index, trial)
RankKey = tuple[float, float, int, int]


def rank_key(
    direction: Direction, value: float, val_loss: float | None, stage: int, number: int
) -> RankKey:
    """Smaller is better: objective, then validation loss (unknown counts as worst), then
    the earlier trial."""
    loss = val_loss if val_loss is not None and math.isfinite(val_loss) else math.inf
    return (direction.rank(value), loss, stage, number)


def trial_rank(direction: Direction, staged: Staged) -> RankKey:
    stage, trial = staged
    assert trial.value is not None
    return rank_key(direction, trial.value, trial.user_attrs.get(VAL_LOSS), stage, trial.number)


def ranked(trials: Iterable[Staged], direction: Direction) -> list[Staged]:
    """The complete trials, best first."""
    complete = [
        (stage, t)
        for stage, t in trials
        if t.state is TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    return sorted(complete, key=lambda staged: trial_rank(direction, staged))


def best_trials(trials: list[Staged], keep_top: float, direction: Direction) -> list[Staged]:
    """The best complete trials: `keep_top` as a count, or as a share (at least one) of the
    finished trials that used budget."""
    if keep_top >= 1:
        count = int(keep_top)
    else:
        count = max(1, round(keep_top * sum(uses_budget(t) for _, t in trials)))
    return ranked(trials, direction)[:count]


def sweep_best(
    stages: list[tuple[str, list[FrozenTrial]]], direction: Direction, winner: str | None = None
) -> tuple[str, FrozenTrial] | None:
    """The sweep's best trial as ("stage#number", trial): the seed-robust selection's winner
    when the sweep chose one (see `select`), else the best-ranked complete trial. `stages`
    are (name, own trials) in order."""
    labelled = {f"{name}#{t.number}": t for name, trials in stages for t in trials}
    if winner is not None and winner in labelled:
        return winner, labelled[winner]
    order = ranked(
        [(index, t) for index, (_, trials) in enumerate(stages) for t in trials], direction
    )
    if not order:
        return None
    index, trial = order[0]
    return f"{stages[index][0]}#{trial.number}", trial
