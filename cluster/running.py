"""What the executor has asked of a running trial's worker, and what it may ask next."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

from caviar.models.executor import EpochDone, Event, TrialJob
from caviar.models.metrics import EpochMetrics


@dataclass
class RunningTrial:
    """A trial on its worker: the calls under way for it, and how far it may train."""

    job: TrialJob
    actor: Any  # a TrialWorker actor handle
    attempt: int = 0
    epochs: int = 0  # epochs this trial's workers returned, over all attempts
    ahead: deque[ray.ObjectRef] = field(default_factory=deque)  # calls asked for, in order
    asked: int = 0  # the last epoch asked for in this attempt
    answered: int = 0  # epochs of this attempt the driver let the trial go on after
    seconds: float = 0.0  # how long its last epoch took (0: none yet)

    def limit(self) -> int:
        """The last epoch it may train now: the next one the driver decides on, and the
        ones up to the decision after (trained while the driver decides; dropped if the
        trial stops there)."""
        return self.job.next_decision(self.job.next_decision(self.answered))

    def returned(self, trained: list[EpochMetrics]) -> list[Event]:
        """The epochs a call returned, as events (the worker is on the next ones already)."""
        self.epochs += len(trained)
        self.seconds = trained[-1].seconds if trained else self.seconds
        return [EpochDone(self.job.key, metrics) for metrics in trained]

    def restart(self) -> None:
        """From its first epoch again, on a new worker: nothing asked, answered or timed."""
        self.ahead.clear()
        self.asked = self.answered = 0
        self.seconds = 0.0

    def ask(self, longest: float) -> list[ray.ObjectRef]:
        """Calls for its next epochs (`next_call`), queued on its worker; returns them."""
        job, asked = self.job, []
        while count := self.next_call(longest):
            first, self.asked = self.asked + 1, self.asked + count
            if first == 1:
                ref = self.actor.begin.remote(job.key, job.model, job.train, count)
            else:
                ref = self.actor.train_epochs.remote(count)
            self.ahead.append(ref)
            asked.append(ref)
        return asked

    def next_call(self, longest: float) -> int:
        """How many epochs to ask for next (0: none now, two calls are asked or the limit is
        reached): up to the next epoch the driver decides on, and `longest` seconds of them at
        most; one while no epoch's time is known (an epoch may take minutes)."""
        if len(self.ahead) >= 2 or self.asked >= self.limit():
            return 0
        per_call = max(1, int(longest / self.seconds)) if self.seconds > 0 else 1
        return min(self.job.next_decision(self.asked), self.asked + per_call) - self.asked
