"""A sweep's trials by stage, read from its studies for the report (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.studies import SPACE, own_trials, read_stages


@dataclass(frozen=True)
class StageTrials:
    name: str
    budget: int
    space: SearchSpace
    trials: list[FrozenTrial]  # the stage's own trials, carried copies left out
    attrs: dict[str, Any]  # its study's user attributes


def load_stages(spec: SweepSpec, storage_url: str) -> list[StageTrials]:
    """The stages that have started, with their boxes and own trials."""
    stages = []
    studies = read_stages(storage_url, spec.name, [stage.name for stage in spec.stages])
    for stage, (_, study) in zip(spec.stages, studies, strict=True):
        if study is None:
            break
        recorded = study.user_attrs.get(SPACE)
        space = SearchSpace.load(recorded) if recorded else spec.search_space
        trials = own_trials(study.get_trials())
        stages.append(StageTrials(stage.name, stage.trials, space, trials, study.user_attrs))
    return stages


def sweep_space(spec: SweepSpec, stages: list[StageTrials]) -> SearchSpace:
    """The space the sweep's trials were drawn from: its first stage's as recorded (the
    spec's may have changed since), widened to hold every trial of every stage."""
    base = stages[0].space if stages else spec.search_space
    return base.holding([t.params for stage in stages for t in stage.trials])


def merged_study(spec: SweepSpec, stages: list[StageTrials]) -> optuna.Study:
    """All stages' own finished trials in one in-memory study, over one set of distributions
    (what Optuna's own plots and fANOVA take): the first stage's space as it was recorded
    (the spec's may have changed since), widened to hold every trial. A trial that still
    does not fit (a weight decay of 0 on a log scale) is left out."""
    assert spec.objective.direction is not None
    study = optuna.create_study(direction=spec.objective.direction.study_direction)
    finished = [
        (stage, t)
        for stage in stages
        for t in stage.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    space = sweep_space(spec, stages)
    full = space.distributions()
    for stage, t in finished:
        if set(t.params) != set(full) or not space.contains(t.params):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                value=t.value if t.state is TrialState.COMPLETE else None,
                params=t.params,
                distributions=full,
                intermediate_values=dict(t.intermediate_values),
                user_attrs={"stage": stage.name},
            )
        )
    return study
