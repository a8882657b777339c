"""A per-epoch watchdog: a trial whose epoch runs far past what it should take has hung (a
deadlocked data loader, a stuck collective, a GPU that stopped answering) and is failed as a
`timeout`, so one stuck worker cannot stall the whole sweep.

An epoch's limit is `epoch_timeout` where the spec sets one; else it comes from the trial's
own earlier epochs: ten times the slowest of them, and at least a minute. A trial's first
epoch may also wait for its worker to start and import torch, and builds its network (and
may compile): it gets two minutes more than `epoch_timeout`, or ten minutes without one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FIRST_EPOCH_SECONDS = 600.0
FIRST_EPOCH_GRACE = 120.0
SLOWEST_FACTOR = 10.0
FLOOR_SECONDS = 60.0


@dataclass
class _Clock:
    since: float  # when the epoch now training began (monotonic)
    epoch: int = 1  # that epoch's number
    slowest: float = 0.0  # the slowest epoch so far, in seconds


@dataclass(frozen=True)
class Overdue:
    key: int
    epoch: int
    limit: float

    @property
    def reason(self) -> str:
        return f"timeout: epoch {self.epoch} still running after {self.limit:.0f} s"


class EpochWatch:
    """When each running trial's current epoch began, and whether it is overdue."""

    def __init__(self, epoch_timeout: float | None = None) -> None:
        self.epoch_timeout = epoch_timeout
        self._clocks: dict[int, _Clock] = {}

    def began(self, key: int) -> None:
        """Trial `key` (re)started: its first epoch is under way."""
        self._clocks[key] = _Clock(since=time.monotonic())

    def epoch_ended(self, key: int, seconds: float) -> None:
        """An epoch of `key` ended; the worker is on the next one already."""
        clock = self._clocks.get(key)
        if clock is not None:
            clock.since, clock.epoch = time.monotonic(), clock.epoch + 1
            clock.slowest = max(clock.slowest, seconds)

    def forget(self, key: int) -> None:
        self._clocks.pop(key, None)

    def limit(self, key: int) -> float:
        first = self._clocks[key].epoch == 1
        if self.epoch_timeout is not None:
            return self.epoch_timeout + (FIRST_EPOCH_GRACE if first else 0.0)
        if first:
            return FIRST_EPOCH_SECONDS
        return max(FLOOR_SECONDS, SLOWEST_FACTOR * self._clocks[key].slowest)

    def overdue(self) -> list[Overdue]:
        now = time.monotonic()
        late = []
        for key, clock in self._clocks.items():
            limit = self.limit(key)
            if now - clock.since > limit:
                late.append(Overdue(key, clock.epoch, limit))
        return late

    def seconds_to_next_deadline(self) -> float:
        """How long until the first running epoch goes overdue (inf with none running)."""
        now = time.monotonic()
        left = [c.since + self.limit(k) - now for k, c in self._clocks.items()]
        return max(0.0, min(left, default=float("inf")))
