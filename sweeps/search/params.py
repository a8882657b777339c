"""Search-space scales, one class each, and their Optuna distributions.

Each scale says how a hyperparameter is sampled:

- `log`:    log-uniform on [low, high] (learning rate, weight decay).
- `log1m`:  `1 - x` log-uniform, for averaging factors such as momentum or Adam's betas. Moving
  beta from 0.9 to 0.9005 barely changes the ~1/(1-beta) = 10-step window, moving it from 0.999
  to 0.9995 doubles a 1000-step window; sampling 1-beta on a log scale spends trials evenly
  over those window lengths. Optuna sees the parameter as `1-<name>` with a log distribution.
- `linear`: uniform on [low, high].
- `int`:    integers in [low, high], optionally log-spaced (`log: true`).
- `choices`: a categorical set.

Each converts between two forms: the user's (`momentum = 0.99`, what configs and MLflow show)
and Optuna's (`1-momentum = 0.01`, what samplers see). A range with `low == high`, or a single
choice, pins the value. Narrowing (coarse to fine) works on each parameter's own axis: log(x) for
`log`, log(1-x) for `log1m`, x for `linear`, and log(x) or x for `int`; the box around the kept
values is widened by `margin` times the full range's length on that axis and clipped to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from caviar.sweeps.search.choice_param import ChoiceParam


class _Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float
    high: float

    @model_validator(mode="after")
    def _low_not_above_high(self) -> _Range:
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, but got low={self.low}, high={self.high}")
        return self

    @property
    def pinned(self) -> bool:
        return self.low == self.high

    def optuna_name(self, name: str) -> str:
        """The parameter's name as Optuna sees it."""
        return name

    def distribution(self) -> BaseDistribution:
        raise NotImplementedError

    def to_value(self, internal: Any) -> Any:
        """Optuna's form -> the user's (what configs and MLflow show)."""
        return float(internal)

    def to_internal(self, value: Any) -> Any:
        """The user's form -> Optuna's."""
        return float(value)

    def contains(self, internal: Any) -> bool:
        dist = self.distribution()
        return bool(dist.low <= internal <= dist.high)  # type: ignore[attr-defined]

    def bounds(self) -> list[Any]:
        """[low, high] in the user's form."""
        return [self.low, self.high]

    def narrow(self, internal: Sequence[Any], margin: float) -> Self:
        """The box holding `internal` values on this parameter's axis, widened and clipped.
        Values outside the range (trials from before the user changed it) count as its
        nearest end; those the scale cannot hold (0 on a log scale) as its low end."""
        if self.pinned or not internal:
            return self
        dist = self.distribution()
        full_low, full_high = self._axis(dist.low), self._axis(dist.high)  # type: ignore[attr-defined]
        points = [
            min(max(self._axis(v), full_low), full_high) if self._on_scale(v) else full_low
            for v in internal
        ]
        pad = margin * (full_high - full_low)
        low, high = min(points) - pad, max(points) + pad
        return self._from_axis(
            None if low <= full_low else low, None if high >= full_high else high
        )

    def holding(self, internal: Sequence[Any]) -> _Range:
        """This range, widened to hold `internal` values (configurations queued from outside
        it, such as a champion found before the range changed); on a linear scale where this
        one cannot hold one of them (a weight decay of 0 on a log scale)."""
        values = [self.to_value(v) for v in internal]
        low, high = min([self.low, *values]), max([self.high, *values])
        if all(self._on_scale(v) for v in internal):
            return self.model_copy(update={"low": low, "high": high})
        return self._linear(low, high)

    def _linear(self, low: float, high: float) -> _Range:
        """The range [low, high] on a linear scale, for values this scale cannot hold."""
        return LinearParam(scale="linear", low=low, high=high)

    def _on_scale(self, internal: float) -> bool:
        """Whether this scale can hold the value at all (a log scale holds no 0)."""
        return True

    def _axis(self, internal: float) -> float:
        return float(internal)

    def _from_axis(self, low: float | None, high: float | None) -> Self:
        """A copy spanning the axis interval; None keeps the full range's end exactly."""
        return self.model_copy(
            update={
                "low": self.low if low is None else low,
                "high": self.high if high is None else high,
            }
        )


class LogParam(_Range):
    scale: Literal["log"]
    low: float = Field(gt=0, description="Smallest value; log scales need it above 0.")

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(self.low, self.high, log=True)

    def grid(self, points: int) -> list[Any]:
        return _geomspace(self.low, self.high, points)

    def _on_scale(self, internal: float) -> bool:
        return internal > 0

    def _axis(self, internal: float) -> float:
        return math.log(internal)

    def _from_axis(self, low: float | None, high: float | None) -> Self:
        return super()._from_axis(
            None if low is None else math.exp(low), None if high is None else math.exp(high)
        )


class Log1mParam(_Range):
    scale: Literal["log1m"]
    low: float = Field(
        ge=0, lt=1, description="Smallest value of x (1-x is sampled log-uniformly)."
    )
    high: float = Field(gt=0, lt=1, description="Largest value of x; below 1.")

    def optuna_name(self, name: str) -> str:
        return f"1-{name}"

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(1.0 - self.high, 1.0 - self.low, log=True)

    def to_value(self, internal: Any) -> Any:
        return 1.0 - float(internal)

    def to_internal(self, value: Any) -> Any:
        return 1.0 - float(value)

    def grid(self, points: int) -> list[Any]:
        return _geomspace(1.0 - self.high, 1.0 - self.low, points)

    def _on_scale(self, internal: float) -> bool:
        return internal > 0  # internal is 1-x

    def _axis(self, internal: float) -> float:
        return math.log(internal)  # internal is 1-x

    def _from_axis(self, low: float | None, high: float | None) -> Self:
        # A low end of 1-x is a high end of x.
        return super()._from_axis(
            None if high is None else 1.0 - math.exp(high),
            None if low is None else 1.0 - math.exp(low),
        )


class LinearParam(_Range):
    scale: Literal["linear"]

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(self.low, self.high)

    def grid(self, points: int) -> list[Any]:
        return _linspace(self.low, self.high, points)


class IntParam(_Range):
    scale: Literal["int"]
    low: int
    high: int
    log: bool = Field(False, description="Space the integers log-uniformly (needs low >= 1).")

    @model_validator(mode="after")
    def _log_needs_positive(self) -> IntParam:
        if self.log and self.low < 1:
            raise ValueError(f"log: true needs low >= 1, but got low={self.low}")
        return self

    def distribution(self) -> BaseDistribution:
        return IntDistribution(self.low, self.high, log=self.log)

    def to_value(self, internal: Any) -> Any:
        return int(internal)

    def to_internal(self, value: Any) -> Any:
        return int(value)

    def grid(self, points: int) -> list[Any]:
        spaced = _geomspace if self.log else _linspace
        return sorted({round(v) for v in spaced(self.low, self.high, points)})

    def _on_scale(self, internal: float) -> bool:
        return internal >= 1 or not self.log

    def _linear(self, low: float, high: float) -> _Range:
        return self.model_copy(update={"low": int(low), "high": int(high), "log": False})

    def _axis(self, internal: float) -> float:
        return math.log(internal) if self.log else float(internal)

    def _from_axis(self, low: float | None, high: float | None) -> Self:
        # Round outwards so the box still holds the values it was built from.
        value = math.exp if self.log else float
        return super()._from_axis(
            None if low is None else max(self.low, math.floor(value(low))),
            None if high is None else min(self.high, math.ceil(value(high))),
        )


def _scale_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "choices" if "choices" in value and "scale" not in value else str(value.get("scale"))
    return "choices" if isinstance(value, ChoiceParam) else str(getattr(value, "scale", ""))


Param = Annotated[
    Annotated[LogParam, Tag("log")]
    | Annotated[Log1mParam, Tag("log1m")]
    | Annotated[LinearParam, Tag("linear")]
    | Annotated[IntParam, Tag("int")]
    | Annotated[ChoiceParam, Tag("choices")],
    Discriminator(
        _scale_tag,
        custom_error_type="scale",
        custom_error_message="expected `scale:` log, log1m, linear or int, or a `choices:` list",
    ),
]
SCALE_TAGS = ("log", "log1m", "linear", "int", "choices")


def _linspace(low: float, high: float, points: int) -> list[float]:
    if points == 1:
        return [(low + high) / 2]
    step = (high - low) / (points - 1)
    return [low + i * step for i in range(points - 1)] + [high]


def _geomspace(low: float, high: float, points: int) -> list[float]:
    inner = [math.exp(v) for v in _linspace(math.log(low), math.log(high), points)[1:-1]]
    return [low, *inner, high] if points > 1 else [math.sqrt(low * high)]
