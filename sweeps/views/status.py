"""Where a sweep stands, read from its Optuna studies (read-only: nothing is created)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caviar.sweeps.record.journal import read_dead_letters, waiting
from caviar.sweeps.search.ranking import sweep_best
from caviar.sweeps.search.select import SELECTION, Selection
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.studies import BOX, count_states, own_trials, read_stages


def sweep_status(spec: SweepSpec, storage_url: str, spool: Path | None = None) -> dict[str, Any]:
    """`{"name", "trials": {complete, pruned, failed, running}, "best": {trial, value, params},
    "stages": [{"name", "budget", "trials", "box"}], "selection": {...} or null, "mlflow":
    {"waiting", "refused"}}`; a stage not started has box null. `spool` is the sweep's
    journal of MLflow writes: how many wait, and why any were refused."""
    assert spec.objective.direction is not None
    totals = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    finished: list[tuple[str, list[Any]]] = []
    stages = []
    studies = read_stages(storage_url, spec.name, [stage.name for stage in spec.stages])
    for stage, (_, study) in zip(spec.stages, studies, strict=True):
        trials = study.get_trials(deepcopy=False) if study else []
        counts = count_states(trials)
        for key, n in counts.items():
            totals[key] += n
        finished.append((stage.name, own_trials(trials)))
        box = study.user_attrs.get(BOX) if study else None
        stages.append({"name": stage.name, "budget": stage.trials, "trials": counts, "box": box})
    first = studies[0][1]
    recorded = first.user_attrs.get(SELECTION) if first is not None else None
    best = sweep_best(finished, spec.objective.direction, recorded and recorded["winner"])
    return {
        "name": spec.name,
        "trials": totals,
        "best": {
            "trial": best[0] if best else None,
            "value": best[1].value if best else None,
            "params": spec.search_space.to_values(best[1].params) if best else {},
        },
        "stages": stages,
        "selection": selection_summary(recorded),
        "mlflow": {
            "waiting": waiting(spool) if spool else 0,
            "refused": [letter["reason"] for letter in read_dead_letters(spool)] if spool else [],
        },
    }


def selection_summary(recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The seed-robust selection: seeds, and each contender's scores, mean and spread."""
    if not recorded:
        return None
    selection = Selection(
        recorded["seeds"], recorded["scores"], recorded["winner"], recorded.get("incumbent")
    )
    return {
        "seeds": selection.seeds,
        "winner": selection.winner,
        "incumbent": selection.incumbent,
        "contenders": [
            {
                "trial": label,
                "scores": scores,
                "mean": selection.mean(label),
                "sd": selection.sd(label),
            }
            for label, scores in selection.scores.items()
        ],
    }
