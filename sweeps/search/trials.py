"""One trial's two records, its Optuna trial and its MLflow run, opened and closed together.

The order of closing is what keeps them consistent after a crash: MLflow first, then Optuna.
If the driver dies between the two, Optuna still has the trial running, so the next driver
marks both interrupted (`reissue_interrupted`) instead of leaving an MLflow run open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.packs import SHARED
from caviar.sweeps.record.tracking import Tracker
from caviar.sweeps.search.best import Best
from caviar.sweeps.search.ranking import VAL_LOSS
from caviar.sweeps.search.spec import SamplerName, SweepSpec
from caviar.sweeps.search.stages import StagePlan
from caviar.sweeps.search.studies import (
    FAIL_REASON,
    INCUMBENT,
    INTERRUPTED,
    MLFLOW_RUN_KEY,
    QUEUED,
    fail_interrupted,
    is_carried,
    uses_budget,
)

STATE_LABELS = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}  # else "failed"


def state_label(state: TrialState) -> str:
    """complete, pruned or failed: how MLflow tags, status and progress name a final state."""
    return STATE_LABELS.get(state, "failed")


@dataclass
class LiveTrial:
    """A trial being trained: its Optuna trial, MLflow run key and configuration."""

    trial: optuna.Trial
    plan: StagePlan
    key: str  # MLflow run key
    params: dict[str, Any]  # searched values, user form
    model: ModelConfig
    train: TrainConfig
    recorded: int = 0  # epochs already reported (a restarted worker repeats them)
    val_loss: float | None = None  # of the last epoch reported

    @property
    def number(self) -> int:
        return self.trial.number


def open_trial(
    study: optuna.Study,
    plan: StagePlan,
    spec: SweepSpec,
    tracker: Tracker,
    fixed: dict[str, Any] | None = None,
) -> LiveTrial:
    """Ask the stage's study for a configuration and open its MLflow run; `fixed` parameters
    (Optuna's form) are given, the sampler draws the others."""
    if fixed:
        study.enqueue_trial(fixed)
    trial = study.ask(plan.space.distributions())
    params = plan.space.to_values(trial.params)
    model, train = spec.configs(params, epochs=plan.epochs)
    logged = {**model.model_dump(mode="json"), **train.model_dump(mode="json")}
    # The key goes on the Optuna trial before the run exists: a driver killed in between
    # leaves a key without a run, which the next driver creates, never a run nobody closes.
    key = tracker.new_key()
    trial.set_user_attr(MLFLOW_RUN_KEY, key)
    trial.set_user_attr("stage", plan.name)
    tracker.start_trial(plan.name, trial.number, logged, key)
    return LiveTrial(trial, plan, key, params, model, train)


def close_trial(
    tracker: Tracker,
    live: LiveTrial,
    state: TrialState,
    value: float | None,
    reason: str | None = None,
) -> None:
    """End the trial's MLflow run, then tell Optuna (see the module's note on order)."""
    if reason is not None:
        live.trial.set_user_attr(FAIL_REASON, reason)
    if state is TrialState.COMPLETE and live.val_loss is not None:
        live.trial.set_user_attr(VAL_LOSS, live.val_loss)
    tags = {"failure_reason": reason} if reason else {}
    if state is TrialState.PRUNED:
        tags["pruned_at_epoch"] = str(live.recorded)
    tracker.end_trial(live.key, state_label(state), tags)
    live.trial.study.tell(live.trial, value if state is TrialState.COMPLETE else None, state=state)


def requeue(
    study: optuna.Study, plan: StagePlan, params: dict[str, Any], attrs: dict[str, Any]
) -> None:
    """An interrupted trial's configuration is queued again when the stage must evaluate it:
    a queued one (an `enqueue` entry, a re-tune's incumbent) or a grid point. Other samplers
    simply draw anew."""
    if plan.spec.sampler is SamplerName.GRID or QUEUED in attrs:
        kept = {k: attrs[k] for k in (QUEUED, INCUMBENT) if k in attrs}
        study.enqueue_trial(params, user_attrs=kept)


def reissue_interrupted(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    plan: StagePlan,
    tracker: Tracker,
    note: Callable[[str], None],
) -> None:
    """Trials a stopped driver left running fail as interrupted; their budget is re-issued."""
    for stale in fail_interrupted(storage, study):
        requeue(study, plan, stale.params, stale.user_attrs)
        # A driver killed between asking Optuna and creating the trial's run left no run:
        # make it now (under the trial's key, if it has one: the run may exist already, with
        # its params), so every trial has its record.
        key = stale.user_attrs.get(MLFLOW_RUN_KEY)
        params = {} if key else plan.space.to_values(stale.params)
        key = tracker.start_trial(plan.name, stale.number, params, key)
        tracker.end_trial(key, "failed", {"failure_reason": INTERRUPTED})
        note(f"{plan.name} trial {stale.number}: left running by a stopped driver; re-issued")


class TrialSupply:
    """A stage's trials to start, one drawn ahead: while every worker trains, the driver asks
    the sampler for the next configuration (and opens its MLflow run), so a worker that frees
    up starts at once instead of waiting for the ask. The trial drawn ahead counts against the
    budget when drawn, and sees the results in by then, as a parallel worker's would."""

    def __init__(self, study: optuna.Study, plan: StagePlan, spec: SweepSpec, tracker: Tracker,
                 left: int, shape_per_pack: bool = False) -> None:  # fmt: skip
        self.study, self.plan, self.spec, self.tracker = study, plan, spec, tracker
        self.left = left  # budget not drawn yet
        self.spare: LiveTrial | None = None
        # Parameters a pack's members share, drawn once per pack (Optuna's names)
        self.shape = shape_names(plan, spec) if shape_per_pack else []

    @property
    def exhausted(self) -> bool:
        return self.spare is None and self.left <= 0

    def take(self, like: LiveTrial | None = None) -> LiveTrial | None:
        """The next trial to start (the one drawn ahead, if any); None when the budget is out.
        With `like` (a trial whose pack has a free seat), where the stage draws shapes per
        pack: a trial of its shape, drawn now unless the one drawn ahead has it."""
        if like is not None and self.shape and not self._same_shape(like):
            if self.study.get_trials(False, states=(TrialState.WAITING,)):
                if self.spare is not None:
                    return None  # queued configurations come first, in their own shapes
            elif self.left <= 0:
                return None
            else:
                self.left -= 1
                fixed = {n: like.trial.params[n] for n in self.shape if n in like.trial.params}
                return open_trial(self.study, self.plan, self.spec, self.tracker, fixed)
        if self.spare is None:
            self.draw()
        return self.take_spare()

    def take_spare(self, like: LiveTrial | None = None) -> LiveTrial | None:
        """The trial drawn ahead, if there is one; never asks the sampler."""
        live, self.spare = self.spare, None
        return live

    def hold(self, live: LiveTrial) -> None:
        """`live` waits, drawn, for room (a free worker, or a seat in a pack of its shape)."""
        assert self.spare is None, "one trial waits at a time"
        self.spare = live

    def _same_shape(self, like: LiveTrial) -> bool:
        spare = self.spare
        return spare is not None and all(
            spare.trial.params.get(n) == like.trial.params.get(n) for n in self.shape
        )

    def draw(self) -> None:
        """Draw the next trial ahead of need, if there is budget and none waits."""
        if self.spare is None and self.left > 0:
            self.left -= 1
            self.spare = open_trial(self.study, self.plan, self.spec, self.tracker)


def shape_names(plan: StagePlan, spec: SweepSpec) -> list[str]:
    """The stage's searched parameters (Optuna's names) that set a trial's shape, which the
    members of a pack share: the model's, and the training settings a pack shares."""
    model_fields = type(spec.model).model_fields
    return [
        plan.space.params[name].optuna_name(name)
        for name in plan.space.params
        if name in model_fields or name in SHARED
    ]


def absorb_finished(
    best: Best, plan: StagePlan, trials: list[optuna.trial.FrozenTrial]
) -> tuple[int, float | None]:
    """Count trials finished by earlier drivers into `best`; returns how many used budget and
    the incumbent's value among them (None if it is not there)."""
    counted, incumbent = 0, None
    for t in trials:
        if is_carried(t):
            continue
        counted += uses_budget(t)
        if t.state is not TrialState.COMPLETE or t.value is None:
            continue
        if INCUMBENT in t.user_attrs:
            incumbent = t.value
        if best.beaten_by(t.value, t.user_attrs.get(VAL_LOSS), plan.index, t.number):
            best.take(t.value, plan.space.to_values(t.params), (plan.index, plan.name), t)
    return counted, incumbent
