"""`caviar retune`: a warm-started sweep on the data as it is now.

The re-tune is a sweep of its own (named `<sweep>.retune-<data fingerprint>`, so re-running it
on the same data continues it), logged in the same MLflow experiment and registering into the
same model. Its stages:

1. `warm`: the champion (as the incumbent) and the previous sweep's best trials, retrained on
   the current data;
2. `explore`: a share (`retune.explore`) of the budget over the full ranges again;
3. `fine`: the rest, TPE inside the box around the best trials so far.

The champion is replaced only when a trial beats the incumbent's score on the current data;
the replaced version keeps the alias `previous-champion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from rich.console import Console

from sweeps.driver import Incumbent
from sweeps.launch import Locations, SweepOutcome, execute_sweep
from sweeps.retest import Champion, data_fingerprint, find_champion
from sweeps.spec import SamplerName, StageSpec, SweepSpec
from sweeps.stages import best_trials
from sweeps.studies import own_trials, read_stages


@dataclass(frozen=True)
class RetuneOutcome:
    name: str  # the sweep re-tuned
    sweep: str  # the re-tune's own sweep name
    champion_before: Champion
    outcome: SweepOutcome

    @property
    def replaced(self) -> bool:
        return self.outcome.published

    def summary(self) -> dict[str, Any]:
        best = self.outcome.best
        return {
            "name": self.name,
            "retune": self.sweep,
            "incumbent": {
                "version": self.champion_before.version,
                "score_then": self.champion_before.score,
                "score_now": self.outcome.incumbent_value,
            },
            "best": {"value": best.value, "trial": best.label, "params": best.params},
            "replaced": self.replaced,
        }


def previous_best(
    spec: SweepSpec, storage_url: str, sweep: str, count: int
) -> list[dict[str, Any]]:
    """The `count` best complete trials of `sweep` (user form), best first."""
    assert spec.objective.direction is not None
    if count == 0:
        return []
    trials = [
        t
        for _, study in read_stages(storage_url, sweep, _stage_names(spec, sweep))
        if study is not None
        for t in own_trials(study.get_trials())
    ]
    best = best_trials(trials, count, spec.objective.direction)
    return [spec.search_space.to_values(t.params) for t in best]


def retune_spec(spec: SweepSpec, champion: Champion, warm: list[dict[str, Any]]) -> SweepSpec:
    """The sweep that re-tunes `spec` on its current data, starting from `warm` configs."""
    budget = spec.retune.trials
    explore = round(budget * spec.retune.explore)
    epochs = champion.train.epochs
    first = spec.stages[0]
    stages = [
        StageSpec(
            name="warm",
            trials=1 + len(warm),
            sampler=SamplerName.RANDOM,
            epochs=epochs,
            enqueue=warm,
            narrow=False,
        ),
    ]
    if explore:
        stages.append(
            StageSpec(
                name="explore",
                trials=explore,
                sampler=SamplerName.QMC,
                epochs=epochs,
                pruner=first.pruner,
                narrow=False,
            )
        )
    if budget - explore:
        last = spec.stages[-1]
        stages.append(
            StageSpec(
                name="fine",
                trials=budget - explore,
                sampler=SamplerName.TPE,
                epochs=epochs,
                pruner=last.pruner,
                keep_top=last.keep_top if len(spec.stages) > 1 else 0.2,
                margin=last.margin,
            )
        )
    return spec.model_copy(
        update={
            "name": retune_name(spec),
            "data": spec.retune.data or spec.data,
            "stages": stages,
            "experiment": spec.experiment_name,
            "registered_model": spec.model_name,
            "seed": spec.seed + 1,
        }
    )


def retune_name(spec: SweepSpec) -> str:
    return f"{spec.name}.retune-{data_fingerprint(spec)}"


def retune(
    spec: SweepSpec, where: Locations, ray_address: str | None, console: Console
) -> RetuneOutcome:
    champion = find_champion(where.tracking, spec)
    warm = [
        values
        for values in previous_best(
            spec, where.storage_url, champion.sweep, spec.retune.keep_previous
        )
        if values != champion.values(spec)
    ]
    plan = retune_spec(spec, champion, warm)
    console.print(
        f"re-tuning {spec.name} on the current data as sweep {plan.name}: champion "
        f"v{champion.version} and {len(warm)} earlier best trial(s) first, then "
        + ", ".join(f"{s.name} ({s.trials})" for s in plan.stages[1:])
    )
    outcome = execute_sweep(
        plan,
        where,
        ray_address,
        console,
        source={"retune_spec.yaml": yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)},
        incumbent=Incumbent(f"v{champion.version}", champion.values(spec)),
    )
    return RetuneOutcome(spec.name, plan.name, champion, outcome)


def _stage_names(spec: SweepSpec, sweep: str) -> list[str]:
    if sweep == spec.name:
        return [s.name for s in spec.stages]
    return ["warm", "explore", "fine"]  # a re-tune's stages
