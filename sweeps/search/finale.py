"""After the last stage: choose the champion among the best trials, seed-robustly, and publish
it; or, when a re-tune's incumbent holds its ground, keep the champion and re-base its
reference score on the data as it is now (so the next re-test compares like with like).

The selection is recorded in the first stage's study (`select.SELECTION`) and on each
contender's MLflow run; a resumed sweep with the same contenders reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna

from caviar.models.executor import TrialExecutor
from caviar.sweeps.record.champion import Candidate, ChampionKeeper, reference_json
from caviar.sweeps.record.tracking import Tracker
from caviar.sweeps.search.best import Best
from caviar.sweeps.search.ranking import ranked
from caviar.sweeps.search.select import SELECTION, Contender, Selection, choose, seed_scores
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.stages import StagePlan
from caviar.sweeps.search.studies import CHAMPION, CHECKPOINT, INCUMBENT, MLFLOW_RUN_KEY, own_trials

Stages = list[tuple[StagePlan, optuna.Study]]


@dataclass(frozen=True)
class FinaleResult:
    selection: Selection | None
    published: bool  # a new champion was registered
    kept: bool  # a re-tune's incumbent stays champion


class Finale:
    def __init__(
        self,
        spec: SweepSpec,
        executor: TrialExecutor,
        champion: ChampionKeeper,
        tracker: Tracker,
        note: Callable[[str], None],
    ) -> None:
        self.spec, self.executor, self.champion = spec, executor, champion
        self.tracker, self.note = tracker, note
        self.metric = spec.objective.metric

    def run(self, stages: Stages, best: Best) -> FinaleResult:
        """Select among the contenders, make the winner `best`, publish or keep it."""
        found = contenders(self.spec, stages)
        if not found:
            return FinaleResult(None, published=False, kept=False)
        first = stages[0][1]
        selection = self._select(first, found)
        winner = next(c for c in found if c.label == selection.winner)
        best.take(winner.value, winner.params, winner.stage, winner.trial)
        if winner.incumbent:
            self._rebase(winner, selection)
            return FinaleResult(selection, published=False, kept=True)
        if first.user_attrs.get(CHAMPION) == winner.label:
            return FinaleResult(selection, published=False, kept=False)
        reference = selection.reference(winner.label, self.spec.retune.seeds)
        published = self.champion.publish_best(
            _candidate(winner, reference), self.executor, self.metric
        )
        if published is not None:
            first.set_user_attr(CHAMPION, winner.label)
        return FinaleResult(selection, published=published is not None, kept=False)

    def _select(self, first: optuna.Study, found: list[Contender]) -> Selection:
        extra = max(self.spec.select.seeds if self.spec.select else 0, self.spec.retune.seeds - 1)
        base = found[0].train.seed
        seeds = [base + i for i in range(extra + 1)]
        recorded = first.user_attrs.get(SELECTION)
        if (
            recorded
            and recorded["seeds"] == seeds
            and set(recorded["scores"]) == {c.label for c in found}
        ):
            return Selection(seeds, recorded["scores"], recorded["winner"], recorded["incumbent"])
        if extra:
            self.note(
                f"choosing the champion among {len(found)} trial(s) by their mean over "
                f"{extra + 1} seeds"
            )
        scores = seed_scores(self.executor, found, extra, self.metric, self.spec.parallel.pack)
        assert self.spec.objective.direction is not None
        winner = choose(found, scores, self.spec.objective.direction, self._tolerance(found))
        incumbent = next((c.label for c in found if c.incumbent), None)
        selection = Selection(seeds, scores, winner, incumbent)
        first.set_user_attr(SELECTION, selection.dump())
        for contender in found:
            key = contender.trial.user_attrs.get(MLFLOW_RUN_KEY)
            if key is not None and extra:
                self.tracker.record_seeds(key, self.metric, seeds, scores[contender.label])
        return selection

    def _tolerance(self, found: list[Contender]) -> float:
        """A re-tune's challenger must beat the incumbent by more than `retune.tolerance`."""
        return self.spec.retune.tolerance if any(c.incumbent for c in found) else 0.0

    def _rebase(self, incumbent: Contender, selection: Selection) -> None:
        mean = selection.mean(incumbent.label)
        self.note(
            f"champion {incumbent.trial.user_attrs[INCUMBENT]} kept: no trial beats its mean "
            f"{self.metric} of {mean:.4f} on this data by more than {self.spec.retune.tolerance}"
        )
        reference = selection.reference(incumbent.label, self.spec.retune.seeds)
        self.tracker.rebase_champion(
            self.spec.model_name,
            {"reference": reference_json(reference),
             "rebased_at": datetime.now(UTC).isoformat(timespec="seconds")},
        )  # fmt: skip


def contenders(spec: SweepSpec, stages: Stages) -> list[Contender]:
    """The best `select.top_k` complete trials (one without `select`), best first, and a
    re-tune's incumbent."""
    assert spec.objective.direction is not None
    plans = {plan.index: plan for plan, _ in stages}
    staged = [(plan.index, t) for plan, study in stages for t in own_trials(study.get_trials())]
    order = ranked(staged, spec.objective.direction)
    top = spec.select.top_k if spec.select else 1
    chosen = [(i, t) for i, t in order if INCUMBENT not in t.user_attrs][:top]
    chosen += [(i, t) for i, t in order if INCUMBENT in t.user_attrs][:1]
    found = []
    for index, trial in chosen:
        plan = plans[index]
        params = plan.space.to_values(trial.params)
        model, train = spec.configs(params, epochs=plan.epochs)
        incumbent = INCUMBENT in trial.user_attrs
        found.append(Contender((index, plan.name), trial, params, model, train, incumbent))
    return found


def _candidate(winner: Contender, reference: dict[int, float]) -> Candidate:
    trial = winner.trial
    saved = trial.user_attrs.get(CHECKPOINT)
    return Candidate(
        trial.user_attrs.get(MLFLOW_RUN_KEY), winner.label, winner.value,
        Path(saved) if saved else None, winner.model, winner.train, reference,
    )  # fmt: skip
