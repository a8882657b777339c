"""A sweep's search space: its hyperparameters (`params`) in user form and in Optuna form.

`SearchSpace` is what stages narrow and what the driver asks Optuna with; `dump`/`load` keep a
stage's space in its study so a resumed sweep searches exactly the box it searched before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from pydantic import TypeAdapter

from caviar.sweeps.search.params import Param


class SearchSpace:
    """The searched hyperparameters of a sweep, in user form and Optuna form."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna name -> distribution, what `Study.ask(fixed_distributions=...)` takes."""
        return {p.optuna_name(name): p.distribution() for name, p in self.params.items()}

    def to_values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's sampled params -> hyperparameter values as a config takes them."""
        return {
            name: p.to_value(optuna_params[p.optuna_name(name)])
            for name, p in self.params.items()
            if p.optuna_name(name) in optuna_params
        }

    def to_optuna(self, values: dict[str, Any]) -> dict[str, Any]:
        """Hyperparameter values -> Optuna's form (the inverse of `to_values`)."""
        return {
            p.optuna_name(name): p.to_internal(values[name])
            for name, p in self.params.items()
            if name in values
        }

    def grid(self, points: int) -> dict[str, list[Any]]:
        """Optuna name -> grid values, `points` per numeric parameter spaced in its own scale."""
        return {p.optuna_name(name): p.grid(points) for name, p in self.params.items()}

    def contains(self, optuna_params: dict[str, Any]) -> bool:
        """Whether a trial's params (Optuna form) lie in this space."""
        return all(
            p.optuna_name(name) in optuna_params and p.contains(optuna_params[p.optuna_name(name)])
            for name, p in self.params.items()
        )

    def narrow(self, kept: Sequence[dict[str, Any]], margin: float) -> SearchSpace:
        """The box around `kept` trials' params (Optuna form), per parameter in its own scale."""
        return SearchSpace(
            {
                name: p.narrow(
                    [t[p.optuna_name(name)] for t in kept if p.optuna_name(name) in t], margin
                )
                for name, p in self.params.items()
            }
        )

    def holding(self, points: Sequence[dict[str, Any]]) -> SearchSpace:
        """This space, each parameter widened to hold the values `points` (Optuna form) give
        it."""
        return SearchSpace(
            {
                name: p.holding(
                    [t[p.optuna_name(name)] for t in points if p.optuna_name(name) in t]
                )
                for name, p in self.params.items()
            }
        )

    def box(self) -> dict[str, list[Any]]:
        """name -> [low, high] (or the choices), in the user's form."""
        return {name: p.bounds() for name, p in self.params.items()}

    def dump(self) -> dict[str, Any]:
        """A JSON-able form that `SearchSpace.load` reads back."""
        return {name: p.model_dump(mode="json") for name, p in self.params.items()}

    @classmethod
    def load(cls, dumped: dict[str, Any]) -> SearchSpace:
        adapter: TypeAdapter[Any] = TypeAdapter(Param)
        return cls({name: adapter.validate_python(raw) for name, raw in dumped.items()})


def format_box(box: dict[str, list[Any]], separator: str = "\n") -> str:
    """`lr [0.001, 0.1]` per parameter, for terminals and logs."""

    def span(bounds: list[Any]) -> str:
        numeric = all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        if numeric and len(bounds) == 2:
            return f"[{bounds[0]:.4g}, {bounds[1]:.4g}]"
        return str(bounds)

    return separator.join(f"{name} {span(bounds)}" for name, bounds in box.items())
