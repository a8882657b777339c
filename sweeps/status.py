"""Where a sweep stands, read from its Optuna studies (read-only: nothing is created)."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from sweeps.spec import SweepSpec
from sweeps.studies import (
    BOX,
    count_states,
    load_study,
    open_storage,
    own_trials,
    storage_exists,
    study_name,
)


def sweep_status(spec: SweepSpec, storage_url: str) -> dict[str, Any]:
    """`{"name", "trials": {complete, pruned, failed, running}, "best": {value, params},
    "stages": [{"name", "budget", "trials", "box"}]}`; a stage not started has box null."""
    totals = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    best_value: float | None = None
    best_params: dict[str, Any] = {}
    stages = []
    storage = open_storage(storage_url) if storage_exists(storage_url) else None
    maximize = spec.objective.direction == "maximize"
    for stage in spec.stages:
        study = load_study(storage, study_name(spec.name, stage.name)) if storage else None
        trials = study.get_trials(deepcopy=False) if study else []
        counts = count_states(trials)
        for key, n in counts.items():
            totals[key] += n
        for t in own_trials(trials):
            if t.state is not TrialState.COMPLETE or t.value is None:
                continue
            if best_value is None or (t.value > best_value if maximize else t.value < best_value):
                best_value = t.value
                best_params = spec.search_space.to_values(t.params)
        box = study.user_attrs.get(BOX) if study else None
        stages.append({"name": stage.name, "budget": stage.trials, "trials": counts, "box": box})
    return {
        "name": spec.name,
        "trials": totals,
        "best": {"value": best_value, "params": best_params},
        "stages": stages,
    }
