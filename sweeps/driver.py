"""The driver loop: the single writer of the Optuna studies and of MLflow.

For each stage: ask Optuna for configs while there is budget and a free worker, hand them to
the executor, and handle what comes back. After every epoch the driver reports the objective
to Optuna, asks the stage's pruner, and tells the worker to go on or stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from models.errors import CaviarError
from models.net import ModelConfig
from models.train import EpochMetrics
from sweeps.champion import Candidate, ChampionKeeper
from sweeps.executor import (
    EpochDone,
    Event,
    TrialCrashed,
    TrialExecutor,
    TrialJob,
    WorkerLost,
)
from sweeps.space import SearchSpace, format_box
from sweeps.spec import Direction, SweepSpec
from sweeps.stages import (
    StagePlan,
    best_trials,
    carried_trials,
    make_pruner,
    make_sampler,
    narrow,
    plan_stages,
)
from sweeps.studies import (
    BOX,
    CHAMPION,
    CHECKPOINT,
    FAIL_REASON,
    INCUMBENT,
    INTERRUPTED,
    KEPT,
    MLFLOW_RUN_KEY,
    SPACE,
    fail_interrupted,
    is_carried,
    load_study,
    open_study,
    own_trials,
    study_name,
    uses_budget,
)
from sweeps.tracking import Tracker


@dataclass(frozen=True)
class TrialEnd:
    """How a trial ended, as progress displays and summaries see it."""

    stage: str
    number: int
    state: str  # complete, pruned or failed
    value: float | None
    params: dict[str, Any]
    epochs: int
    reason: str | None = None


class ProgressSink(Protocol):
    def stage_started(self, plan: StagePlan, done: int) -> None: ...
    def trial_ended(self, end: TrialEnd, best: Best) -> None: ...
    def running(self, count: int) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Best:
    """Best complete trial so far over all stages."""

    direction: Direction
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    number: int | None = None
    key: str | None = None  # its MLflow run key
    checkpoint: Path | None = None  # its saved weights, when they were kept

    @property
    def label(self) -> str:
        return f"{self.stage}#{self.number}"

    def beaten_by(self, value: float) -> bool:
        if self.value is None:
            return True
        return value > self.value if self.direction == "maximize" else value < self.value

    def take(self, value: float, params: dict[str, Any], stage: str, trial: Any) -> None:
        """Make `trial` (an Optuna trial, live or frozen) the best."""
        self.value, self.params, self.stage, self.number = value, params, stage, trial.number
        self.key = trial.user_attrs.get(MLFLOW_RUN_KEY)
        saved = trial.user_attrs.get(CHECKPOINT)
        self.checkpoint = Path(saved) if saved else None


@dataclass(frozen=True)
class Incumbent:
    """The champion a re-tune must beat: its registry version and its hyperparameters."""

    label: str
    values: dict[str, Any]


@dataclass
class _Live:
    trial: optuna.Trial
    key: str  # MLflow run key
    params: dict[str, Any]
    model: ModelConfig
    recorded: int = 0  # epochs already reported (a restarted worker repeats them)


class SweepDriver:
    def __init__(
        self,
        spec: SweepSpec,
        storage: optuna.storages.BaseStorage,
        tracker: Tracker,
        executor: TrialExecutor,
        progress: ProgressSink,
        champion: ChampionKeeper | None = None,
        incumbent: Incumbent | None = None,
    ) -> None:
        self.spec = spec
        self.champion = champion
        self.incumbent = incumbent
        self.incumbent_value: float | None = None  # its score on this sweep's data
        self.published = False  # this run registered a new champion
        self.storage = storage
        self.tracker = tracker
        self.executor = executor
        self.progress = progress
        self.metric = spec.objective.metric
        assert spec.objective.direction is not None
        self.best = Best(spec.objective.direction)
        self._live: dict[int, _Live] = {}
        self._finished = 0
        self._first_study: optuna.Study | None = None
        self._stillborn = 0  # trials in a row whose worker died before their first epoch

    def run(self) -> Best:
        """Run every stage's remaining budget; on any exit, running trials are closed."""
        previous: list[tuple[StagePlan, optuna.Study]] = []
        try:
            for plan in plan_stages(self.spec):
                plan, study = self._open_stage(plan, previous)
                self._first_study = self._first_study or study
                self._run_stage(plan, study)
                previous.append((plan, study))
            self._publish_champion()
        except BaseException:
            self._abandon_live()
            self.tracker.end_sweep(status="KILLED")
            raise
        waiting = self.tracker.end_sweep()
        if waiting:
            self.progress.note(
                f"MLflow at {self.tracker.writer.tracking_uri} is unreachable: {waiting} writes "
                f"wait in {self.tracker.writer.spool_dir}; `caviar sync` sends them"
            )
        return self.best

    def _publish_champion(self) -> None:
        """Log and register the best trial's network, unless it already is the champion."""
        best, study = self.best, self._first_study
        if self.champion is None or best.value is None or study is None:
            return
        if study.user_attrs.get(CHAMPION) == best.label:
            return
        if self.incumbent_value is not None and not _beats(best, self.incumbent_value):
            self.progress.note(
                f"champion {self.incumbent.label if self.incumbent else ''} kept: no trial beats "
                f"its {self.metric} of {self.incumbent_value:.4f} on this data"
            )
            return
        if best.key is None:
            self.progress.note(f"champion {best.label}: it has no MLflow run; not logged")
            return
        if best.checkpoint is None or not best.checkpoint.exists():
            best.checkpoint = self._retrain(best)
            if best.checkpoint is None:
                self.progress.note(f"champion {best.label}: could not be retrained; not logged")
                return
        accuracy = self.champion.publish(
            Candidate(best.key, best.label, best.value, best.checkpoint), self.metric
        )
        study.set_user_attr(CHAMPION, best.label)
        self.published = True
        self.progress.note(
            f"champion {best.label}: registered as '{self.spec.model_name}@champion', "
            f"test accuracy {accuracy:.4f}"
        )

    def _retrain(self, best: Best) -> Path | None:
        """The best trial's weights were lost with its worker (or its run directory): train
        its configuration again, same seed and data, which reproduces the network."""
        assert self.champion is not None and best.stage is not None
        self.progress.note(f"champion {best.label}: its weights were lost; retraining them")
        stage = next(s for s in self.spec.stages if s.name == best.stage)
        model, train = self.spec.configs(best.params, epochs=self.spec.stage_epochs(stage))
        key = -1  # no Optuna trial has a negative number
        self.executor.start(TrialJob(key, model, train))
        while True:
            for event in self.executor.wait(timeout=0.5):
                if isinstance(event, TrialCrashed):
                    return None
                if isinstance(event, EpochDone) and event.metrics.epoch < train.epochs:
                    self.executor.proceed(key)
                elif isinstance(event, EpochDone):
                    weights = self.executor.weights(key)
                    self.executor.release(key)
                    return self.champion.keep(best.label, model, weights) if weights else None

    def _open_stage(
        self, plan: StagePlan, previous: list[tuple[StagePlan, optuna.Study]]
    ) -> tuple[StagePlan, optuna.Study]:
        """Open the stage's study over its space: the full space for the first stage (and for
        `narrow: false`), else the box around the best trials of the stages before. The box is
        computed once, when the stage first starts, and read back when the sweep resumes."""
        name = study_name(self.spec.name, plan.name)
        existing = load_study(self.storage, name)
        recorded = existing.user_attrs.get(SPACE) if existing is not None else None
        narrowing = bool(previous) and plan.spec.narrow
        earlier = [
            (before.name, t)
            for before, before_study in previous
            for t in own_trials(before_study.get_trials(deepcopy=False))
        ]
        kept: list[optuna.trial.FrozenTrial] = []
        if recorded is not None:
            space = SearchSpace.load(recorded)
        elif narrowing:
            kept = best_trials([t for _, t in earlier], plan.spec.keep_top, self.best.direction)
            space = narrow(plan.space, kept, plan.spec.margin)
        else:
            space = plan.space
        plan = replace(plan, space=space)
        study = open_study(
            self.storage,
            name,
            direction=self.best.direction,
            fingerprint=self.spec.fingerprint(),
            sampler=make_sampler(plan, self.spec.seed),
            pruner=make_pruner(plan.spec.pruner, plan.epochs),
        )
        if recorded is None:
            study.set_user_attr(SPACE, space.dump())
            study.set_user_attr(BOX, space.box())
            carried = []
            if narrowing:
                labels = {id(t): f"{stage}#{t.number}" for stage, t in earlier}
                study.set_user_attr(KEPT, [labels[id(t)] for t in kept])
                carried = carried_trials(earlier, space)
                study.add_trials(carried)
                self.progress.note(
                    f"stage {plan.name}: box around the best {len(kept)} trial(s) so far, "
                    f"{len(carried)} earlier trials carried over: " + format_box(space.box(), "; ")
                )
            self._enqueue(study, plan)
            self.tracker.record_stage(plan.name, space.box(), kept=len(kept), carried=len(carried))
        return plan, study

    def _enqueue(self, study: optuna.Study, plan: StagePlan) -> None:
        """Configurations the stage evaluates first: the incumbent champion (first stage of a
        re-tune), then the stage's `enqueue` list."""
        if plan.index == 0 and self.incumbent is not None:
            study.enqueue_trial(
                plan.space.to_optuna(self.incumbent.values),
                user_attrs={INCUMBENT: self.incumbent.label},
            )
        for values in plan.spec.enqueue:
            study.enqueue_trial(plan.space.to_optuna(values))

    def _run_stage(self, plan: StagePlan, study: optuna.Study) -> None:
        for stale in fail_interrupted(study):
            # A driver killed between asking Optuna and recording the trial's run left no run:
            # make one now, so every trial has its record.
            key = stale.user_attrs.get(MLFLOW_RUN_KEY) or self.tracker.start_trial(
                plan.name, stale.number, plan.space.to_values(stale.params)
            )
            self.tracker.end_trial(key, "failed", {"failure_reason": INTERRUPTED})
            self.progress.note(
                f"{plan.name} trial {stale.number}: left running by a stopped driver; re-issued"
            )
        finished = study.get_trials(deepcopy=False)
        self._absorb(plan, finished)
        budget_left = plan.trials - sum(uses_budget(t) for t in finished)
        self.progress.stage_started(plan, plan.trials - max(budget_left, 0))
        while budget_left > 0 or self._live:
            while budget_left > 0 and len(self._live) < self.executor.slots:
                self._launch(study, plan)
                budget_left -= 1
            for event in self.executor.wait(timeout=0.5):
                self._handle(study, plan, event)
            self.progress.running(len(self._live))
            self.tracker.flush(force=False)

    def _absorb(self, plan: StagePlan, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Count trials finished by earlier drivers into the best-so-far."""
        for t in trials:
            if is_carried(t):
                continue
            if INCUMBENT in t.user_attrs and t.state is TrialState.COMPLETE:
                self.incumbent_value = t.value
            if (
                t.state is TrialState.COMPLETE
                and t.value is not None
                and self.best.beaten_by(t.value)
            ):
                self.best.take(t.value, plan.space.to_values(t.params), plan.name, t)
            if uses_budget(t):
                self._finished += 1

    def _launch(self, study: optuna.Study, plan: StagePlan) -> None:
        trial = study.ask(plan.space.distributions())
        params = plan.space.to_values(trial.params)
        model, train = self.spec.configs(params, epochs=plan.epochs)
        key = self.tracker.start_trial(
            plan.name,
            trial.number,
            {**model.model_dump(mode="json"), **train.model_dump(mode="json")},
        )
        trial.set_user_attr(MLFLOW_RUN_KEY, key)
        trial.set_user_attr("stage", plan.name)
        self._live[trial.number] = _Live(trial, key, params, model)
        self.executor.start(TrialJob(trial.number, model, train))

    def _handle(self, study: optuna.Study, plan: StagePlan, event: Event) -> None:
        live = self._live[event.key]
        if isinstance(event, WorkerLost):
            self.progress.note(
                f"{plan.name} trial {live.trial.number}: worker lost ({event.reason}); "
                f"restarting it, attempt {event.attempt + 1}"
            )
            return
        if isinstance(event, TrialCrashed):
            self._finish(study, plan, event.key, TrialState.FAIL, None, event.reason)
            self._check_workers_can_start(live, event.reason)
            return
        metrics = event.metrics
        if metrics.epoch <= live.recorded:  # a restarted worker catching up: already recorded
            self.executor.proceed(event.key)
            return
        live.recorded = metrics.epoch
        self.tracker.log_epoch(live.key, metrics)
        if metrics.diverged:
            self._finish(study, plan, event.key, TrialState.FAIL, None, "diverged")
            return
        value = self._objective(metrics)
        live.trial.report(value, metrics.epoch)
        if metrics.epoch >= plan.epochs:
            self._finish(study, plan, event.key, TrialState.COMPLETE, value)
        elif live.trial.should_prune():
            self._finish(study, plan, event.key, TrialState.PRUNED, value)
        else:
            self.executor.proceed(event.key)

    def _check_workers_can_start(self, live: _Live, reason: str) -> None:
        """Stop when workers keep dying before their first epoch: that is the cluster, not the
        hyperparameters (typically a driver and cluster with different Ray auth modes)."""
        if live.recorded > 0 or "worker died" not in reason:
            self._stillborn = 0
            return
        self._stillborn += 1
        if self._stillborn >= 2 * self.executor.slots + 1:
            raise CaviarError(
                f"{self._stillborn} trials in a row lost their worker before one epoch; the "
                f"cluster cannot run trials: {reason}"
            )

    def _objective(self, metrics: EpochMetrics) -> float:
        value = float(getattr(metrics, self.metric))
        return value if math.isfinite(value) else math.nan

    def _finish(
        self,
        study: optuna.Study,
        plan: StagePlan,
        key: int,
        state: TrialState,
        value: float | None,
        reason: str | None = None,
    ) -> None:
        live = self._live.pop(key)
        improved = (
            state is TrialState.COMPLETE
            and value is not None
            and math.isfinite(value)
            and self.best.beaten_by(value)
        )
        if improved:
            self._keep_weights(live, plan.name, key)
        self.executor.release(key)
        if reason is not None:
            live.trial.set_user_attr(FAIL_REASON, reason)
        label = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")
        tags = {"failure_reason": reason} if reason else {}
        if state is TrialState.PRUNED:
            tags["pruned_at_epoch"] = str(live.recorded)
        # MLflow first: if the driver dies between the two, Optuna still has the trial running,
        # so the next driver marks both interrupted instead of leaving an MLflow run open.
        self.tracker.end_trial(live.key, label, tags)
        study.tell(live.trial, value if state is TrialState.COMPLETE else None, state=state)
        self._finished += 1
        if INCUMBENT in live.trial.user_attrs and state is TrialState.COMPLETE:
            self.incumbent_value = value
        if improved:
            assert value is not None
            self.best.take(value, live.params, plan.name, live.trial)
            self.tracker.record_best(self.metric, value, live.params, self._finished)
        self.progress.trial_ended(
            TrialEnd(
                plan.name, live.trial.number, label, value, live.params, live.recorded, reason
            ),
            self.best,
        )

    def _keep_weights(self, live: _Live, stage: str, key: int) -> None:
        """Checkpoint a trial about to become the best, so the champion survives a restart."""
        if self.champion is None:
            return
        weights = self.executor.weights(key)
        if weights is None:
            self.progress.note(f"{stage} trial {live.trial.number}: worker gone, weights not kept")
            return
        path = self.champion.keep(f"{stage}#{live.trial.number}", live.model, weights)
        live.trial.set_user_attr(CHECKPOINT, str(path))

    def _abandon_live(self) -> None:
        """The driver is stopping: running trials become 'interrupted' and are re-run later."""
        for key, live in list(self._live.items()):
            self.executor.release(key)
            live.trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            live.trial.study.tell(live.trial, state=TrialState.FAIL)
            self.tracker.end_trial(live.key, "failed", {"failure_reason": INTERRUPTED})
        self._live.clear()


def _beats(best: Best, value: float) -> bool:
    """Strictly better than `value`: a tie keeps the incumbent."""
    assert best.value is not None
    return best.value > value if best.direction == "maximize" else best.value < value
