"""The `choices` scale: a categorical set of values, in the user's order (see `params` for
the numeric scales and the two forms each converts between; for choices they are the same)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from optuna.distributions import BaseDistribution, CategoricalDistribution
from pydantic import BaseModel, ConfigDict, Field, model_validator

Choice = bool | int | float | str


class ChoiceParam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choices: list[Choice] = Field(min_length=1, description="The values to choose among.")

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, but got {self.choices}")
        return self

    def optuna_name(self, name: str) -> str:
        return name

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(self.choices)

    def to_value(self, internal: Any) -> Any:
        return internal

    def to_internal(self, value: Any) -> Any:
        return value

    def grid(self, points: int) -> list[Any]:
        return list(self.choices)

    @property
    def pinned(self) -> bool:
        return len(self.choices) == 1

    def contains(self, internal: Any) -> bool:
        return internal in self.choices

    def bounds(self) -> list[Any]:
        return list(self.choices)

    def holding(self, internal: Sequence[Any]) -> Self:
        """These choices, then those of `internal` that are not among them."""
        extra = [
            v for i, v in enumerate(internal) if v not in self.choices and v not in internal[:i]
        ]
        return self.model_copy(update={"choices": [*self.choices, *extra]}) if extra else self

    def narrow(self, internal: Sequence[Any], margin: float) -> Self:
        """The choices that appear among `internal`, in their original order."""
        kept = [c for c in self.choices if c in internal]
        return self.model_copy(update={"choices": kept}) if kept else self
