"""Seed-robust selection: the last word on which trial becomes the champion.

One seed's score is a draw, not a measurement: batch-norm networks trained from another seed
land a percent or two apart, and the best of many trials is partly the luckiest. After the
last stage the contenders (the best `select.top_k` trials, or just the best one; in a re-tune
also the incumbent champion) are trained again with other seeds on the same data. Each one's
scores on seeds `train.seed + 0, 1, ...` (seed 0 is the trial itself, not trained again) give a
mean and a spread; the best mean wins. A re-tune's challenger must beat the incumbent's mean,
on the same seeds (paired), by more than `retune.tolerance`.

The champion's scores on the first `retune.seeds` seeds become its reference: `caviar retest`
trains the same seeds on the data as it is now and compares like with like.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.executor import Trained, TrialExecutor, TrialJob, run_to_completion
from caviar.sweeps.search.direction import Direction

SELECTION = "selection"  # first stage study's attribute: the recorded `Selection`


@dataclass(frozen=True)
class Contender:
    """A complete trial that may become the champion."""

    stage: tuple[int, str]  # its stage's index and name
    trial: FrozenTrial
    params: dict[str, Any]  # searched values, user form
    model: ModelConfig
    train: TrainConfig  # with the trial's own seed and its stage's epochs
    incumbent: bool = False  # a re-tune's re-evaluation of the current champion

    @property
    def label(self) -> str:
        return f"{self.stage[1]}#{self.trial.number}"

    @property
    def value(self) -> float:
        """Its own score (seed `train.seed`)."""
        assert self.trial.value is not None
        return self.trial.value


@dataclass(frozen=True)
class Selection:
    """Each contender's scores on `seeds` (NaN where that seed failed) and the winner."""

    seeds: list[int]
    scores: dict[str, list[float]]
    winner: str
    incumbent: str | None = None  # a re-tune's current champion among the contenders

    def mean(self, label: str) -> float:
        finite = [s for s in self.scores[label] if math.isfinite(s)]
        return statistics.fmean(finite) if finite else math.nan

    def sd(self, label: str) -> float:
        finite = [s for s in self.scores[label] if math.isfinite(s)]
        return statistics.stdev(finite) if len(finite) > 1 else 0.0

    def reference(self, label: str, count: int) -> dict[int, float]:
        """`label`'s scores on the first `count` seeds: what a re-test compares with."""
        return dict(zip(self.seeds[:count], self.scores[label][:count], strict=True))

    def dump(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "scores": self.scores, "winner": self.winner,
                "incumbent": self.incumbent}  # fmt: skip


def seed_scores(
    executor: TrialExecutor, contenders: list[Contender], extra: int, metric: str, pack: int = 1
) -> dict[str, list[float]]:
    """Each contender's score with its own seed and `extra` more (`seed + 1 ... seed + extra`),
    all trained at once on the executor's workers (same-shape runs packed by up to `pack`)."""
    jobs: dict[int, tuple[str, int]] = {}
    for contender in contenders:
        for offset in range(1, extra + 1):
            jobs[len(jobs)] = (contender.label, offset)
    by_label = {c.label: c for c in contenders}
    results = run_to_completion(
        executor,
        [
            TrialJob(key, by_label[label].model, _reseeded(by_label[label].train, offset))
            for key, (label, offset) in jobs.items()
        ],
        pack=pack,
    )
    scores = {c.label: [c.value] + [math.nan] * extra for c in contenders}
    for key, (label, offset) in jobs.items():
        outcome = results[key]
        if isinstance(outcome, Trained):
            scores[label][offset] = float(getattr(outcome.curve[-1], metric))
    return scores


def choose(
    contenders: list[Contender],
    scores: dict[str, list[float]],
    direction: Direction,
    tolerance: float = 0.0,
) -> str:
    """The winner: the best mean (ties: the earlier contender, i.e. the better-ranked trial).
    With an incumbent among them, a challenger wins only if its mean beats the incumbent's by
    more than `tolerance` on the seeds both trained (paired)."""
    means = {c.label: _mean(scores[c.label]) for c in contenders}
    challengers = [c for c in contenders if not c.incumbent and math.isfinite(means[c.label])]
    incumbent = next((c for c in contenders if c.incumbent), None)
    best = None
    for c in challengers:
        if best is None or direction.better(means[c.label], means[best.label]):
            best = c
    if incumbent is None:
        return best.label if best is not None else contenders[0].label
    if best is None or _paired_gain(scores[best.label], scores[incumbent.label], direction) <= (
        tolerance
    ):
        return incumbent.label
    return best.label


def _paired_gain(challenger: list[float], incumbent: list[float], direction: Direction) -> float:
    """Mean over the seeds both scored of how much better the challenger did."""
    gains = [
        direction.gain(c, i)
        for c, i in zip(challenger, incumbent, strict=True)
        if math.isfinite(c) and math.isfinite(i)
    ]
    return statistics.fmean(gains) if gains else math.inf


def _mean(scores: list[float]) -> float:
    finite = [s for s in scores if math.isfinite(s)]
    return statistics.fmean(finite) if finite else math.nan


def _reseeded(train: TrainConfig, offset: int) -> TrainConfig:
    return train.model_copy(update={"seed": train.seed + offset})
