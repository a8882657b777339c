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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from caviar.models.cache import data_file
from caviar.sweeps.record.tracking import Tracker
from caviar.sweeps.search.best import Incumbent
from caviar.sweeps.search.ranking import VAL_LOSS, best_trials
from caviar.sweeps.search.samplers import make_pruner, make_sampler
from caviar.sweeps.search.space import SearchSpace, format_box
from caviar.sweeps.search.spec import SamplerName, StageSpec, SweepSpec
from caviar.sweeps.search.studies import (
    BOX,
    CARRIED_FROM,
    DATA_FILE,
    INCUMBENT,
    KEPT,
    MLFLOW_RUN_KEY,
    QUEUED,
    SPACE,
    check_recipe,
    load_study,
    open_study,
    own_trials,
    study_name,
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


def carried_trials(trials: list[tuple[str, FrozenTrial]], space: SearchSpace) -> list[FrozenTrial]:
    """Copies of earlier (stage, trial)s that completed inside `space`, for `Study.add_trials`."""
    distributions = space.distributions()
    carried = []
    for stage, t in trials:
        if t.state is not TrialState.COMPLETE or t.value is None or not space.contains(t.params):
            continue
        attrs = {CARRIED_FROM: f"{stage}#{t.number}"}
        for kept in (MLFLOW_RUN_KEY, VAL_LOSS):
            if kept in t.user_attrs:
                attrs[kept] = t.user_attrs[kept]
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


def stage_recipe(spec: SweepSpec, plan: StagePlan) -> dict[str, Any]:
    """What a stage's results depend on; a resumed stage must have the same."""
    recipe: dict[str, Any] = {
        "fingerprint": spec.fingerprint(),
        "epochs": plan.epochs,
        "pruner": plan.spec.pruner.model_dump(mode="json"),
        # Queued once, when the stage starts: an entry added or edited later would be ignored.
        "enqueue": [dict(values) for values in plan.spec.enqueue],
    }
    contents = data_file(spec.data)  # a file replaced under the same name
    if contents is not None:
        recipe[DATA_FILE] = contents
    if plan.spec.sampler is SamplerName.GRID:
        recipe["grid_points"] = plan.spec.grid_points
    return recipe


def check_unchanged(storage: optuna.storages.BaseStorage, spec: SweepSpec) -> None:
    """Refuse, before anything is written, a spec that changed what started stages depend on."""
    for plan in plan_stages(spec):
        study = load_study(storage, study_name(spec.name, plan.name))
        if study is not None:
            check_recipe(study, stage_recipe(spec, plan))


def open_stage(
    storage: optuna.storages.BaseStorage,
    spec: SweepSpec,
    plan: StagePlan,
    previous: list[tuple[StagePlan, optuna.Study]],
    incumbent: Incumbent | None = None,
) -> OpenedStage:
    """Open the stage's study over its space: the full space for the first stage (and for
    `narrow: false`), else the box around the best trials of the stages before; either way
    widened to hold the configurations it evaluates first. The box is computed once, when
    the stage first starts, and read back when the sweep resumes; its space is recorded
    last, so a set-up cut short is done again (and only once)."""
    assert spec.objective.direction is not None
    name = study_name(spec.name, plan.name)
    existing = load_study(storage, name)
    recorded = existing.user_attrs.get(SPACE) if existing is not None else None
    earlier = [
        (before, t)
        for before, before_study in previous
        for t in own_trials(before_study.get_trials(deepcopy=False))
    ]
    narrowing = bool(previous) and plan.spec.narrow
    kept = _best_earlier(spec, plan, earlier) if narrowing and recorded is None else []
    if recorded is not None:
        plan = replace(plan, space=SearchSpace.load(recorded))
    else:
        queue = queued_configs(plan, incumbent)
        plan = replace(plan, space=stage_space(plan, kept, narrowing, queue))
    done = len(existing.get_trials(deepcopy=False)) if existing is not None else 0
    study = open_study(
        storage, name, spec.objective.direction, stage_recipe(spec, plan),
        sampler=make_sampler(plan, spec.seed, done),
        pruner=make_pruner(plan.spec.pruner, plan.epochs),
    )  # fmt: skip
    if recorded is not None:
        return OpenedStage(plan, study, fresh=False, kept=0, carried=0)
    named = [(before.name, t) for before, t in earlier] if narrowing else None
    carried = _set_up(study, plan, named, kept, incumbent)
    return OpenedStage(plan, study, fresh=True, kept=len(kept), carried=carried)


def _best_earlier(
    spec: SweepSpec, plan: StagePlan, earlier: list[tuple[StagePlan, FrozenTrial]]
) -> list[FrozenTrial]:
    """The earlier stages' best trials that a narrowing stage's box is built around."""
    assert spec.objective.direction is not None
    staged = [(before.index, t) for before, t in earlier]
    return [t for _, t in best_trials(staged, plan.spec.keep_top, spec.objective.direction)]


Queued = tuple[str, dict[str, Any], dict[str, Any]]  # (place, values, the trial's user attrs)


def queued_configs(plan: StagePlan, incumbent: Incumbent | None) -> list[Queued]:
    """What the stage evaluates first: a re-tune's incumbent (in its first stage), then the
    stage's `enqueue`."""
    queue: list[Queued] = []
    if plan.index == 0 and incumbent is not None:
        queue.append(("incumbent", incumbent.values, {INCUMBENT: incumbent.label}))
    return queue + [(str(i), values, {}) for i, values in enumerate(plan.spec.enqueue)]


def stage_space(
    plan: StagePlan, kept: list[FrozenTrial], narrowing: bool, queue: list[Queued]
) -> SearchSpace:
    """A new stage's space: the box around the `kept` trials (`narrowing`) or the whole space,
    widened so that every configuration queued in it lies inside (the spec checks that its
    `enqueue` lies in the space, but a re-tune's champion may come from before the user
    changed it)."""
    queued = [plan.space.to_optuna(values) for _, values, _ in queue]
    if narrowing and kept:
        return plan.space.narrow([*(t.params for t in kept), *queued], plan.spec.margin)
    return plan.space.holding(queued)


def _set_up(
    study: optuna.Study,
    plan: StagePlan,
    earlier: list[tuple[str, FrozenTrial]] | None,
    kept: list[FrozenTrial],
    incumbent: Incumbent | None,
) -> int:
    """A new stage: when it narrows (`earlier` given), carry the earlier trials inside its box
    into its study; queue the configurations it evaluates first; then record its box and,
    last, its space. What an interrupted set-up already added is not added again. Returns how
    many trials were carried."""
    present = study.get_trials(deepcopy=False)
    carried = carried_trials(earlier or [], plan.space)
    if earlier is not None:
        labels = {id(t): f"{stage}#{t.number}" for stage, t in earlier}
        study.set_user_attr(KEPT, [labels[id(t)] for t in kept])
        there = {t.user_attrs.get(CARRIED_FROM) for t in present}
        study.add_trials([t for t in carried if t.user_attrs[CARRIED_FROM] not in there])
    queued = {t.user_attrs.get(QUEUED) for t in present}
    for place, values, attrs in queued_configs(plan, incumbent):
        if place not in queued:
            study.enqueue_trial(plan.space.to_optuna(values), user_attrs={QUEUED: place, **attrs})
    study.set_user_attr(BOX, plan.space.box())
    study.set_user_attr(SPACE, plan.space.dump())
    return len(carried)


def record_opening(
    opened: OpenedStage, full: SearchSpace, tracker: Tracker, note: Callable[[str], None]
) -> None:
    """A stage opens: its box in the progress (a narrowed one, or one widened beyond the
    `full` space to hold its queued configurations) and in MLflow."""
    box, queued = opened.plan.space.box(), opened.plan.spec.enqueue
    spec_box = full.box()
    widened = {name: bounds for name, bounds in box.items() if bounds != spec_box.get(name)}
    if opened.plan.index > 0 and opened.plan.spec.narrow:
        note(
            f"stage {opened.plan.name}: box around the best {opened.kept} trial(s) so far"
            + (f" and its {len(queued)} queued configuration(s)" if queued else "")
            + f", {opened.carried} earlier trials carried over: "
            + format_box(box, "; ")
        )
    elif widened:
        note(
            f"stage {opened.plan.name}: configurations it evaluates first lie outside the "
            "spec's space and are trained as they are; its space is widened to hold them: "
            + format_box(widened, "; ")
        )
    tracker.record_stage(opened.plan.name, box, opened.kept, opened.carried)
