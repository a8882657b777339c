"""The spec's `model` and `data` sections: whichever model families and data sources are
registered (built in, or by installed plugins), as tagged unions on `family` and `source`.

A spec that names an unregistered family or source fails validation with the list of the
registered ones; `model.family` may be left out (it is `mlp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from caviar.models.config import MlpConfig, ModelConfig
from caviar.models.data import SourceConfig
from caviar.models.plugins import data_sources, model_families


def _tagged(configs: list[type[Any]], tag: str) -> Any:
    unique = tuple(dict.fromkeys(configs))
    return Annotated[Union[unique], Field(discriminator=tag)]  # noqa: UP007 (a runtime tuple)


if TYPE_CHECKING:
    ModelSection = ModelConfig
    DataSection = SourceConfig
else:
    ModelSection = _tagged([r.plugin.config for r in model_families().values()], "family")
    DataSection = _tagged([r.plugin.config for r in data_sources().values()], "source")

DEFAULT_FAMILY = MlpConfig


def with_default_family(raw: Any) -> Any:
    """A spec's `model` section with `family: mlp` where it names none."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = {**raw, "model": {"family": "mlp", **raw["model"]}}
    return raw
