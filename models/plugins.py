"""What caviar can train and load: model families and data sources, by name.

The built-in ones come with caviar; an installed package adds its own through entry points:

```toml
[project.entry-points."caviar.models"]
resmlp = "my_package.resmlp:FAMILY"    # a caviar.models.plugins.Family
[project.entry-points."caviar.data"]
spirals = "my_package.spirals:SOURCE"  # a caviar.models.plugins.Source
```

A spec names a family (`model.family`) or a source (`data.source`); only what an installed
package registered is ever imported, never a module named in a YAML file. A plugin that fails
to load is left out with a warning, and `caviar plugins` shows why.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

MODEL_GROUP = "caviar.models"
DATA_GROUP = "caviar.data"


@dataclass(frozen=True)
class Family:
    """A model family: its config class (a `caviar.models.config.ModelConfig` subclass whose
    `family` field is `Literal["<name>"]`) and `build(n_features, n_classes, config)`, which
    returns a `torch.nn.Module` mapping (batch, n_features) inputs to (batch, n_classes)
    logits."""

    config: type[BaseModel]
    build: Callable[[int, int, Any], Any]


@dataclass(frozen=True)
class Source:
    """A data source: its config class (a `caviar.models.data.SourceConfig` subclass whose
    `source` field is `Literal["<name>"]`; a `path` field is read relative to the spec) and
    `load(config)`, which returns a `caviar.models.data.Table` (or `(x, labels)` arrays)."""

    config: type[BaseModel]
    load: Callable[[Any], Any]


T = TypeVar("T", Family, Source)


@dataclass(frozen=True)
class Registered(Generic[T]):
    name: str
    plugin: T
    origin: str  # "caviar (built in)" or the distribution and module that registered it


@dataclass(frozen=True)
class Broken:
    """An entry point that could not be used, and why."""

    group: str
    name: str
    origin: str
    reason: str


def model_families() -> dict[str, Registered[Family]]:
    """Every model family by name: the built-in ones, then the installed plugins'."""
    from caviar.models.families import BUILT_IN

    return _registry(MODEL_GROUP, BUILT_IN)


def data_sources() -> dict[str, Registered[Source]]:
    """Every data source by name: the built-in ones, then the installed plugins'."""
    from caviar.models.sources import BUILT_IN

    return _registry(DATA_GROUP, BUILT_IN)


def broken() -> list[Broken]:
    """Entry points of either group that are left out, with the reason."""
    return list(_load(MODEL_GROUP)[1] + _load(DATA_GROUP)[1])


def family(name: str) -> Family:
    return model_families()[name].plugin


def source(name: str) -> Source:
    return data_sources()[name].plugin


def _registry(group: str, built_in: dict[str, Any]) -> dict[str, Registered[Any]]:
    found = {
        name: Registered(name, plugin, "caviar (built in)") for name, plugin in built_in.items()
    }
    loaded, _ = _load(group)
    for entry in loaded:
        if entry.name not in found:
            found[entry.name] = entry
    return found


_KINDS: dict[str, tuple[type[Any], str]] = {
    MODEL_GROUP: (Family, "family"),
    DATA_GROUP: (Source, "source"),
}


@functools.cache
def _load(group: str) -> tuple[tuple[Any, ...], tuple[Broken, ...]]:
    """The group's entry points, loaded once per process; the unusable ones are reported once
    on stderr and returned apart."""
    kind, field = _KINDS[group]
    loaded, left_out = [], []
    for point in metadata.entry_points(group=group):
        origin = (
            f"{point.dist.name} {point.dist.version} ({point.value})" if point.dist else point.value
        )
        try:
            plugin = point.load()
            _check(plugin, kind, field, point.name)
        except Exception as exc:  # a plugin's own failure must not take caviar down with it
            reason = f"{type(exc).__name__}: {exc}"
            left_out.append(Broken(group, point.name, origin, reason))
            print(f"caviar: {group} plugin '{point.name}' left out: {reason}", file=sys.stderr)
            continue
        loaded.append(Registered(point.name, plugin, origin))
    return tuple(loaded), tuple(left_out)


def _check(plugin: Any, kind: type[Any], field: str, name: str) -> None:
    if not isinstance(plugin, kind):
        raise TypeError(f"expected a caviar.models.plugins.{kind.__name__}, got {type(plugin)}")
    declared = plugin.config.model_fields.get(field)
    if declared is None or declared.default != name:
        raise TypeError(
            f"{plugin.config.__name__} needs a field `{field}: Literal['{name}'] = '{name}'`"
        )
