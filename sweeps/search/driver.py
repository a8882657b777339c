"""The driver loop: the single writer of the Optuna studies and of MLflow.

For each stage: ask Optuna for configs while there is budget and a free worker, hand them to
the executor, and handle what comes back. After every epoch the driver reports the objective
to Optuna, asks the stage's pruner, and tells the worker to go on or stop. Opening a stage
(its box, carried trials, queued configs) lives in `stages`, a trial's two records in
`trials`, publishing the champion in `caviar.sweeps.record.champion`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import TrialState

from caviar.models.errors import CaviarError
from caviar.models.executor import (
    EpochDone,
    Event,
    PackedTrials,
    TrialCrashed,
    TrialExecutor,
    TrialJob,
    WorkerLost,
)
from caviar.sweeps.record.champion import ChampionKeeper
from caviar.sweeps.record.tracking import Tracker
from caviar.sweeps.search.best import Best, Incumbent, TrialEnd, Usage
from caviar.sweeps.search.finale import Finale, FinaleResult
from caviar.sweeps.search.samplers import decision_epochs
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.stages import StagePlan, open_stage, plan_stages, record_opening
from caviar.sweeps.search.studies import (
    CHECKPOINT,
    INCUMBENT,
    INTERRUPTED,
    uses_budget,
)
from caviar.sweeps.search.trials import (
    LiveTrial,
    TrialSupply,
    absorb_finished,
    close_trial,
    reissue_interrupted,
    requeue,
    state_label,
)


class ProgressSink(Protocol):
    def stage_started(self, plan: StagePlan, done: int) -> None: ...
    def trial_ended(self, end: TrialEnd, best: Best) -> None: ...
    def running(self, count: int) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class SweepResult:
    """What one run of the driver found and did."""

    best: Best  # the champion's trial when a champion was chosen
    incumbent_value: float | None  # a re-tune's re-evaluated champion, on this data
    finale: FinaleResult  # how the champion was chosen, and whether it was published
    waiting_writes: int  # MLflow writes left on disk for an unreachable server
    usage: Usage  # how busy the workers were

    @property
    def published(self) -> bool:
        return self.finale.published


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
        assert spec.objective.direction is not None
        self.spec, self.storage, self.tracker = spec, storage, tracker
        self.executor, self.progress = executor, progress
        self.champion, self.incumbent = champion, incumbent
        self.incumbent_value: float | None = None  # its score on this sweep's data
        self.metric = spec.objective.metric
        self.best = Best(spec.objective.direction)
        self._live: dict[int, LiveTrial] = {}
        self._finished = 0
        self._stillborn = 0  # trials in a row whose worker died before their first epoch
        self.usage = Usage(executor.slots)
        self._supply: TrialSupply | None = None  # the running stage's next trials
        self._packs = search_packs(spec, executor)  # each worker's pack, where trials pack
        self._trials: TrialExecutor = self._packs or executor  # what trains searched trials

    def run(self) -> SweepResult:
        """Run every stage's remaining budget and publish the champion; on any exit, running
        trials are closed (as interrupted, to be run again)."""
        try:
            stages = self._run_stages()
            finale = FinaleResult(None, published=False, kept=False)
            if self.champion is not None:
                finale = Finale(
                    self.spec, self.executor, self.champion, self.tracker, self.progress.note
                ).run(stages, self.best)
        except BaseException:
            self._abandon_live()
            self.tracker.end_sweep(status="KILLED")
            raise
        waiting = self.tracker.end_sweep()
        for refusal in self.tracker.refused():
            self.progress.note(refusal)
        if waiting:
            self.progress.note(self.tracker.unreachable_note(waiting))
        incumbent = incumbent_score(finale, self.incumbent_value)
        return SweepResult(self.best, incumbent, finale, waiting, self.usage)

    def _run_stages(self) -> list[tuple[StagePlan, optuna.Study]]:
        """Every stage in order; returns each stage's plan (with its box) and study."""
        previous: list[tuple[StagePlan, optuna.Study]] = []
        for plan in plan_stages(self.spec):
            opened = open_stage(self.storage, self.spec, plan, previous, self.incumbent)
            if opened.fresh:
                record_opening(opened, self.spec.search_space, self.tracker, self.progress.note)
            self._run_stage(opened.plan, opened.study)
            previous.append((opened.plan, opened.study))
        return previous

    def _run_stage(self, plan: StagePlan, study: optuna.Study) -> None:
        reissue_interrupted(self.storage, study, plan, self.tracker, self.progress.note)
        finished = study.get_trials(deepcopy=False)
        counted, incumbent = absorb_finished(self.best, plan, finished)
        self._finished += counted
        self.incumbent_value = incumbent if incumbent is not None else self.incumbent_value
        budget_left = plan.trials - sum(uses_budget(t) for t in finished)
        self.progress.stage_started(plan, plan.trials - max(budget_left, 0))
        shapes = plan.spec.shape_per_pack and self._packs is not None
        self._supply = supply = TrialSupply(study, plan, self.spec, self.tracker, budget_left,
                                            shapes)  # fmt: skip
        while not supply.exhausted or self._live:
            self._fill(supply.take)
            if len(self._live) == self._trials.slots and not shapes:
                supply.draw()  # the next trial, drawn while every worker trains
            for event in self._trials.wait(timeout=0.5):
                self._handle(plan, event)
            self.progress.running(len(self._live))
            self.tracker.flush(force=False)
            for refusal in self.tracker.refused():
                self.progress.note(refusal)

    def _fill(self, take: Callable[[LiveTrial | None], LiveTrial | None]) -> None:
        """Start trials from `take` while there is room: a free worker, or a free seat in a
        pack (the next trial is drawn in that pack's shape where the stage asks for it). A
        trial that fits nowhere yet waits, drawn, for a worker or a seat of its shape."""
        while len(self._live) < self._trials.slots:
            seat = self._packs.open_pack() if self._packs is not None else None
            live = take(self._live.get(seat) if seat is not None else None)
            if live is None:
                return
            decisions = decision_epochs(live.plan.spec.pruner, live.plan.epochs)
            job = TrialJob(live.number, live.model, live.train, decisions)
            if self._packs is not None and not self._packs.fits(job):
                assert self._supply is not None
                self._supply.hold(live)
                return
            self._live[live.number] = live
            self._trials.start(job)

    def _handle(self, plan: StagePlan, event: Event) -> None:
        live = self._live.get(event.key)
        if live is None:  # an epoch worked ahead, collected with the one that ended its trial
            return
        if isinstance(event, WorkerLost):
            self.progress.note(
                f"{plan.name} trial {live.number}: worker lost ({event.reason}); "
                f"restarting it, attempt {event.attempt + 1}"
            )
        elif isinstance(event, TrialCrashed):
            self._finish(plan, live, TrialState.FAIL, None, event.reason)
            self._check_workers_can_start(live, event.reason)
        else:
            self._epoch_done(plan, live, event)

    def _epoch_done(self, plan: StagePlan, live: LiveTrial, event: EpochDone) -> None:
        """Report the epoch; then the trial completes, is pruned, fails or goes on."""
        metrics = event.metrics
        if metrics.epoch <= live.recorded:  # a restarted worker catching up: already recorded
            self._trials.proceed(live.number)
            return
        live.recorded, live.val_loss = metrics.epoch, metrics.val_loss
        self._stillborn = 0  # workers do start: only failures in a row count
        self.usage.epoch(metrics.seconds)
        if self.usage.epochs == 1:  # the workers are up: the record's helpers start now
            self.tracker.start_writing()
            if self.champion is not None:
                self.champion.ready()
        self.tracker.log_epoch(live.key, metrics)
        if metrics.diverged:
            self._finish(plan, live, TrialState.FAIL, None, "diverged")
            return
        value = float(getattr(metrics, self.metric))
        value = value if math.isfinite(value) else math.nan
        live.trial.report(value, metrics.epoch)
        if metrics.epoch >= plan.epochs:
            self._finish(plan, live, TrialState.COMPLETE, value)
        elif live.trial.should_prune():
            self._finish(plan, live, TrialState.PRUNED, value)
        else:
            self._trials.proceed(live.number)

    def _check_workers_can_start(self, live: LiveTrial, reason: str) -> None:
        """Stop when workers keep dying before their first epoch: that is the cluster, not the
        hyperparameters (typically a driver and cluster with different Ray auth modes)."""
        if live.recorded > 0 or "worker died" not in reason:
            self._stillborn = 0
            return
        self._stillborn += 1
        if self._stillborn >= 2 * self._trials.slots + 1:
            raise CaviarError(
                f"{self._stillborn} trials in a row lost their worker before one epoch; the "
                f"cluster cannot run trials: {reason}"
            )

    def _finish(
        self,
        plan: StagePlan,
        live: LiveTrial,
        state: TrialState,
        value: float | None,
        reason: str | None = None,
    ) -> None:
        del self._live[live.number]
        self.usage.ended()
        improved = (
            state is TrialState.COMPLETE
            and value is not None
            and math.isfinite(value)
            and self.best.beaten_by(value, live.val_loss, plan.index, live.number)
        )
        if improved and self.champion is not None:
            label = f"{plan.name}#{live.number}"
            path = self.champion.checkpoint(self._trials, live.number, label, live.model)
            if path is not None:
                live.trial.set_user_attr(CHECKPOINT, str(path))
        self._trials.release(live.number)
        if self._supply is not None:  # the trial drawn ahead starts before the bookkeeping
            self._fill(self._supply.take_spare)
        close_trial(self.tracker, live, state, value, reason)  # also records its val_loss
        self._finished += 1
        if INCUMBENT in live.trial.user_attrs and state is TrialState.COMPLETE:
            self.incumbent_value = value
        if improved and value is not None:
            self.best.take(value, live.params, (plan.index, plan.name), live.trial)
            self.tracker.record_best(self.metric, value, live.params, self._finished)
        label = state_label(state)
        end = TrialEnd(plan.name, live.number, label, value, live.params, live.recorded, reason)
        self.progress.trial_ended(end, self.best)

    def _abandon_live(self) -> None:
        """The driver is stopping: running trials become 'interrupted', their budget is issued
        again when the sweep resumes (and their configuration too, where it must be)."""
        spare = self._supply.spare if self._supply is not None else None
        for live in [*self._live.values(), *([spare] if spare else [])]:
            self._trials.release(live.number)
            close_trial(self.tracker, live, TrialState.FAIL, None, INTERRUPTED)
            requeue(live.trial.study, live.plan, live.trial.params, live.trial.user_attrs)
        self._live.clear()


def search_packs(spec: SweepSpec, executor: TrialExecutor) -> PackedTrials | None:
    """Packs for the searched trials where `parallel.pack` asks for them and the networks can
    pack (no dropout, neither set nor searched); None: each trial trains alone."""
    return executor.packed(spec.search_pack) if spec.search_pack > 1 else None


def incumbent_score(finale: FinaleResult, seen: float | None) -> float | None:
    """A re-tune's incumbent on this data: its mean over the selection's seeds, else its
    value as the sweep `seen` it."""
    selection = finale.selection
    if selection is not None and selection.incumbent is not None:
        return selection.mean(selection.incumbent)
    return seen
