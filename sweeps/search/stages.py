"""Stages of a sweep: each with its own budget, sampler, pruner and epoch budget.

Coarse to fine: the first stage searches the spec's full ranges; each later stage searches the
box around the best trials of the stages before it (`narrow`) and starts from the earlier trials
inside that box (`carried_trials`): they count as its first observations without being trained
again. A stage with `narrow: false` searches the full ranges again. Each stage has its own
Optuna study, because changing a parameter's range inside one study misleads TPE
(optuna#1553). `open_stage` does all of this once, when a stage first starts, and reads it back
when a sweep resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import optuna
from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.search.best import Incumbent
from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.samplers import make_pruner, make_sampler
from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.search.spec import StageSpec, SweepSpec
from caviar.sweeps.search.studies import (
    BOX,
    CARRIED_FROM,
    INCUMBENT,
    KEPT,
    MLFLOW_RUN_KEY,
    SPACE,
    load_study,
    open_study,
    own_trials,
    study_name,
    uses_budget,
)


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
    complete.sort(key=lambda t: direction.rank(float(t.value or 0.0)))
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


@dataclass(frozen=True)
class OpenedStage:
    """A stage ready to run: its plan over its own space (the box), and its study."""

    plan: StagePlan
    study: optuna.Study
    fresh: bool  # opened for the first time now: its box was computed and recorded
    kept: int  # best earlier trials the box was built around
    carried: int  # earlier trials inside the box copied into its study


def open_stage(
    storage: optuna.storages.BaseStorage,
    spec: SweepSpec,
    plan: StagePlan,
    previous: list[tuple[StagePlan, optuna.Study]],
    incumbent: Incumbent | None = None,
) -> OpenedStage:
    """Open the stage's study over its space: the full space for the first stage (and for
    `narrow: false`), else the box around the best trials of the stages before. The box is
    computed once, when the stage first starts, and read back when the sweep resumes."""
    assert spec.objective.direction is not None
    name = study_name(spec.name, plan.name)
    existing = load_study(storage, name)
    recorded = existing.user_attrs.get(SPACE) if existing is not None else None
    earlier = [
        (before.name, t)
        for before, before_study in previous
        for t in own_trials(before_study.get_trials(deepcopy=False))
    ]
    narrowing = bool(previous) and plan.spec.narrow
    kept: list[FrozenTrial] = []
    if recorded is not None:
        plan = replace(plan, space=SearchSpace.load(recorded))
    elif narrowing:
        kept = best_trials([t for _, t in earlier], plan.spec.keep_top, spec.objective.direction)
        plan = replace(plan, space=narrow(plan.space, kept, plan.spec.margin))
    study = open_study(
        storage,
        name,
        direction=spec.objective.direction,
        fingerprint=spec.fingerprint(),
        sampler=make_sampler(plan, spec.seed),
        pruner=make_pruner(plan.spec.pruner, plan.epochs),
    )
    if recorded is not None:
        return OpenedStage(plan, study, fresh=False, kept=0, carried=0)
    carried = _set_up(study, plan, earlier if narrowing else None, kept, incumbent)
    return OpenedStage(plan, study, fresh=True, kept=len(kept), carried=carried)


def _set_up(
    study: optuna.Study,
    plan: StagePlan,
    earlier: list[tuple[str, FrozenTrial]] | None,
    kept: list[FrozenTrial],
    incumbent: Incumbent | None,
) -> int:
    """Record a new stage's space and box; when it narrows (`earlier` given), carry the
    earlier trials inside the box into its study; queue the configurations it evaluates
    first. Returns how many trials were carried."""
    study.set_user_attr(SPACE, plan.space.dump())
    study.set_user_attr(BOX, plan.space.box())
    carried = carried_trials(earlier or [], plan.space)
    if earlier is not None:
        labels = {id(t): f"{stage}#{t.number}" for stage, t in earlier}
        study.set_user_attr(KEPT, [labels[id(t)] for t in kept])
        study.add_trials(carried)
    if plan.index == 0 and incumbent is not None:
        study.enqueue_trial(
            plan.space.to_optuna(incumbent.values), user_attrs={INCUMBENT: incumbent.label}
        )
    for values in plan.spec.enqueue:
        study.enqueue_trial(plan.space.to_optuna(values))
    return len(carried)
