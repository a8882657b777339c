"""Where a sweep stands, read from its Optuna studies (read-only: nothing is created)."""

from __future__ import annotations

from typing import Any

from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.stages import best_trials
from caviar.sweeps.search.studies import BOX, count_states, own_trials, read_stages


def sweep_status(spec: SweepSpec, storage_url: str) -> dict[str, Any]:
    """`{"name", "trials": {complete, pruned, failed, running}, "best": {value, params},
    "stages": [{"name", "budget", "trials", "box"}]}`; a stage not started has box null."""
    assert spec.objective.direction is not None
    totals = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    finished = []
    stages = []
    studies = read_stages(storage_url, spec.name, [stage.name for stage in spec.stages])
    for stage, (_, study) in zip(spec.stages, studies, strict=True):
        trials = study.get_trials(deepcopy=False) if study else []
        counts = count_states(trials)
        for key, n in counts.items():
            totals[key] += n
        finished += own_trials(trials)
        box = study.user_attrs.get(BOX) if study else None
        stages.append({"name": stage.name, "budget": stage.trials, "trials": counts, "box": box})
    best = best_trials(finished, 1, spec.objective.direction)
    return {
        "name": spec.name,
        "trials": totals,
        "best": {
            "value": best[0].value if best else None,
            "params": spec.search_space.to_values(best[0].params) if best else {},
        },
        "stages": stages,
    }
