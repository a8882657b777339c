"""Which way is better: the one place that compares objective values."""

from __future__ import annotations

from enum import StrEnum

from optuna.study import StudyDirection


class Direction(StrEnum):
    """`maximize` (accuracy) or `minimize` (a loss)."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"

    @classmethod
    def natural(cls, metric: str) -> Direction:
        """Accuracy goes up, losses go down."""
        return cls.MAXIMIZE if metric.endswith("accuracy") else cls.MINIMIZE

    def better(self, value: float, than: float | None) -> bool:
        """`value` strictly beats `than` (anything beats None; a tie does not)."""
        if than is None:
            return True
        return value > than if self is Direction.MAXIMIZE else value < than

    def gain(self, value: float, over: float) -> float:
        """How much better `value` is than `over` (negative: worse)."""
        return value - over if self is Direction.MAXIMIZE else over - value

    def rank(self, value: float) -> float:
        """A sort key that puts the best value first."""
        return -value if self is Direction.MAXIMIZE else value

    @property
    def study_direction(self) -> StudyDirection:
        """The same direction as Optuna names it."""
        if self is Direction.MAXIMIZE:
            return StudyDirection.MAXIMIZE
        return StudyDirection.MINIMIZE
