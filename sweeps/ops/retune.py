"""`caviar retune`: a warm-started sweep on the data as it is now.

The re-tune is a sweep of its own, named after the stale re-test verdict it answers and the
spec (`<sweep>.retune-<verdict>-<spec>`: running it again continues it, a new verdict or an
edited spec starts a new one), logged in the same MLflow experiment and registering into the
same model. Its stages:

1. `warm`: the champion (as the incumbent) and the previous sweep's best trials, retrained on
   the current data;
2. `explore`: a share (`retune.explore`) of the budget over the full ranges again;
3. `fine`: the rest, TPE inside the box around the best trials so far.

After them, the best challengers and the incumbent are trained with the champion's reference
seeds (`select`): a challenger replaces the champion only when its mean beats the incumbent's,
seed for seed, by more than `retune.tolerance`; the replaced version keeps the alias
`previous-champion`. A kept champion gets its reference re-measured on the current data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from mlflow import MlflowClient
from rich.console import Console

from caviar.models.errors import CaviarError
from caviar.sweeps.launch import Locations, SweepOutcome, execute_sweep
from caviar.sweeps.ops.retest import RETEST_ROLE, champion_of, current_data, data_fingerprint
from caviar.sweeps.record.champion import Champion
from caviar.sweeps.record.operations import KEY_TAG
from caviar.sweeps.record.tracking import ROLE
from caviar.sweeps.search.best import Incumbent
from caviar.sweeps.search.ranking import best_trials
from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.search.spec import SamplerName, StageSpec, SweepSpec
from caviar.sweeps.search.studies import SPACE, own_trials, read_stages


@dataclass(frozen=True)
class RetuneOutcome:
    name: str  # the sweep re-tuned
    sweep: str  # the re-tune's own sweep name
    champion_before: Champion
    outcome: SweepOutcome

    @property
    def replaced(self) -> bool:
        return self.outcome.result.published

    def summary(self) -> dict[str, Any]:
        best = self.outcome.best
        return {
            "name": self.name,
            "retune": self.sweep,
            "incumbent": {
                "version": self.champion_before.version,
                "score_then": self.champion_before.reference_score,
                "score_now": self.outcome.result.incumbent_value,
            },
            "best": {"value": best.value, "trial": best.label, "params": best.params},
            "replaced": self.replaced,
        }


def previous_best(
    spec: SweepSpec, storage_url: str, champion: Champion, count: int
) -> list[dict[str, Any]]:
    """The `count` best complete trials of the champion's sweep besides the champion, best
    first, as values of the spec's searched parameters: read through their own stage's
    recorded space (the spec's may have changed since), and where a parameter was not
    searched then, the value the whole sweep trained with, the champion's."""
    assert spec.objective.direction is not None
    if count == 0:
        return []
    stages = read_stages(storage_url, champion.sweep, _stage_names(spec, champion.sweep))
    trials = [
        (index, t)
        for index, (stage, study) in enumerate(stages)
        if study is not None
        for t in own_trials(study.get_trials())
        if f"{stage}#{t.number}" != champion.trial
    ]
    spaces = [_recorded_space(study, spec) for _, study in stages]
    best = best_trials(trials, count, spec.objective.direction)
    then = [spaces[index].to_values(t.params) for index, t in best]
    fixed = champion.values(spec.space)
    return [
        {name: v.get(name, fixed.get(name)) for name in spec.space if name in v or name in fixed}
        for v in then
    ]


def _recorded_space(study: optuna.Study | None, spec: SweepSpec) -> SearchSpace:
    recorded = study.user_attrs.get(SPACE) if study is not None else None
    return SearchSpace.load(recorded) if recorded else spec.search_space


def champion_changes(spec: SweepSpec, champion: Champion) -> list[str]:
    """Where the spec would train the champion's configuration otherwise than it was trained
    (a field no longer searched and fixed at another value, another model, ...): "field:
    spec X, champion Y" (seeds, epochs and device aside)."""
    model, train = spec.configs(champion.values(spec.space))
    changes = []
    for section, now, then in (("model", model, champion.model), ("train", train, champion.train)):
        was = then.model_dump(mode="json")
        for field, value in now.model_dump(mode="json").items():
            if field not in ("seed", "epochs", "device") and value != was.get(field):
                changes.append(f"{section}.{field}: spec {value!r}, champion {was.get(field)!r}")
    return changes


def retune_spec(
    spec: SweepSpec,
    champion: Champion,
    warm: list[dict[str, Any]],
    name: str,
    incumbent: bool = True,
) -> SweepSpec:
    """The sweep `name` that re-tunes `spec` on its current data, starting from `warm` (and
    the champion as the `incumbent`)."""
    return spec.model_copy(
        update={
            "name": name,
            "data": spec.retune.data or spec.data,
            "stages": retune_stages(spec, champion.train.epochs, warm, incumbent),
            "experiment": spec.experiment_name,
            "registered_model": spec.model_name,
            "seed": spec.seed + 1,
        }
    )


def retune_stages(
    spec: SweepSpec, epochs: int, warm: list[dict[str, Any]], incumbent: bool = True
) -> list[StageSpec]:
    """warm (the incumbent and `warm` configs), explore (full ranges, Sobol), fine (TPE in the
    box around the best so far); each trial trains the champion's `epochs`. With
    `parallel.pack`, the warm stage's same-shape configs train packed, and explore and fine
    draw shapes per pack where the sweep's first and last stages did."""
    budget = spec.retune.trials
    explore = round(budget * spec.retune.explore)
    first, last = spec.stages[0], spec.stages[-1]
    stages = [
        StageSpec(name="warm", trials=int(incumbent) + len(warm), sampler=SamplerName.RANDOM,
                  epochs=epochs, enqueue=warm, narrow=False),
    ]  # fmt: skip
    if explore:
        stages.append(
            StageSpec(name="explore", trials=explore, sampler=SamplerName.QMC, epochs=epochs,
                      pruner=first.pruner, narrow=False, shape_per_pack=first.shape_per_pack)
        )  # fmt: skip
    if budget - explore:
        keep_top = last.keep_top if len(spec.stages) > 1 else 0.2
        stages.append(
            StageSpec(name="fine", trials=budget - explore, sampler=SamplerName.TPE,
                      epochs=epochs, pruner=last.pruner, keep_top=keep_top, margin=last.margin,
                      shape_per_pack=last.shape_per_pack)
        )  # fmt: skip
    return stages


def retune_name(spec: SweepSpec, champion: Champion, tracking_uri: str) -> str:
    """The re-tune answering the latest stale re-test verdict on this champion, for this
    spec and data file: a new verdict starts a new re-tune, and so does an edited spec (its
    search, model or training) or a data file with other contents (a started stage refuses
    them); running the command again continues the same one. Without a verdict, the
    champion's version names it."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(spec.experiment_name)
    verdicts = (
        client.search_runs(
            [found.experiment_id],
            f"tags.`{ROLE}` = '{RETEST_ROLE}' and tags.verdict = 'stale' "
            f"and tags.champion_version = '{champion.version}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found is not None
        else []
    )
    # The spec and the current data (a file's contents too: one replaced under its name).
    edition = hashlib.sha256((spec.fingerprint() + data_fingerprint(spec)).encode()).hexdigest()
    if verdicts:
        verdict = verdicts[0].data.tags[KEY_TAG].removeprefix("retest:")[:8]
        return f"{spec.name}.retune-{verdict}-{edition[:6]}"
    return f"{spec.name}.retune-v{champion.version}-{edition[:8]}"


def retune(
    spec: SweepSpec, where: Locations, ray_address: str | None, console: Console
) -> RetuneOutcome:
    champion = champion_of(spec, where.tracking)
    _check_reproducible(spec, champion)
    warm = previous_best(spec, where.storage_url, champion, spec.retune.keep_previous)
    data = current_data(spec)
    unservable = champion.schema_changes(data.features, data.classes)
    if unservable:  # its config trains again as a challenger; the best of them takes over
        console.print(
            f"champion v{champion.version} cannot serve the current data ("
            + "; ".join(unservable)
            + "): the best re-tuned trial replaces it"
        )
        warm = [champion.values(spec.space), *warm]
    name = retune_name(spec, champion, where.tracking)
    plan = retune_spec(spec, champion, warm, name, incumbent=not unservable)
    console.print(
        f"re-tuning {spec.name} on the current data as sweep {plan.name}: champion "
        f"v{champion.version} and {plan.stages[0].trials - 1} earlier best trial(s) first, then "
        + ", ".join(f"{s.name} ({s.trials})" for s in plan.stages[1:])
    )
    incumbent = Incumbent(f"v{champion.version}", champion.values(spec.space))
    outcome = execute_sweep(
        plan,
        where,
        ray_address,
        console,
        source={"retune_spec.yaml": yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False)},
        incumbent=None if unservable else incumbent,
    )
    return RetuneOutcome(spec.name, plan.name, champion, outcome)


def _check_reproducible(spec: SweepSpec, champion: Champion) -> None:
    changes = champion_changes(spec, champion)
    if changes:
        raise CaviarError(
            f"the spec no longer trains champion v{champion.version} as it was trained ("
            + "; ".join(changes)
            + "): a re-tune compares challengers with the champion as it is. Search those "
            "fields, or set them to the champion's values; for a new model, start a sweep "
            "with a new `name`"
        )


def _stage_names(spec: SweepSpec, sweep: str) -> list[str]:
    if sweep == spec.name:
        return [s.name for s in spec.stages]
    return ["warm", "explore", "fine"]  # a re-tune's stages
