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


def merged_study(spec: SweepSpec, stages: list[StageTrials]) -> optuna.Study:
    """All stages' own finished trials in one in-memory study, over the full space's
    distributions (what Optuna's own plots and fANOVA take)."""
    assert spec.objective.direction is not None
    study = optuna.create_study(direction=spec.objective.direction.study_direction)
    full = spec.search_space.distributions()
    for stage in stages:
        for t in stage.trials:
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                continue
            study.add_trial(
                optuna.trial.create_trial(
                    state=t.state,
                    value=t.value if t.state is TrialState.COMPLETE else None,
                    params=t.params,
                    distributions={k: full[k] for k in t.params if k in full},
                    intermediate_values=dict(t.intermediate_values),
                    user_attrs={"stage": stage.name},
                )
            )
    return study
