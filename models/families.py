"""The built-in model families, and building any registered family's network.

`mlp` (`net.build_mlp`) and `cnn1d` (`cnn.build_cnn1d`) come with caviar; plugins add their own
(`caviar.models.plugins`). Everything that builds a network goes through `build_network`, so a
plugin family trains, is pruned, resumes, is published and re-tested like a built-in one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caviar.models.config import Cnn1dConfig, MlpConfig, ModelConfig
from caviar.models.errors import CaviarError
from caviar.models.plugins import Family, model_families

if TYPE_CHECKING:
    from torch import nn


# torch is imported when a network is built (on a worker), not when a spec names a family:
# the driver, which only reads specs, never loads it.
def _build_mlp(n_features: int, n_classes: int, config: MlpConfig) -> nn.Module:
    from caviar.models.net import build_mlp

    return build_mlp(n_features, n_classes, config)


def _build_cnn1d(n_features: int, n_classes: int, config: Cnn1dConfig) -> nn.Module:
    from caviar.models.cnn import build_cnn1d

    return build_cnn1d(n_features, n_classes, config)


BUILT_IN = {
    "mlp": Family(MlpConfig, _build_mlp),
    "cnn1d": Family(Cnn1dConfig, _build_cnn1d),
}


def build_network(n_features: int, n_classes: int, config: ModelConfig) -> nn.Module:
    """The network of `config`'s family: (batch, n_features) inputs to (batch, n_classes)
    logits."""
    return _family(config.family).build(n_features, n_classes, config)


def model_config(values: dict[str, Any], among: bool = False) -> ModelConfig:
    """A stored config (a checkpoint's; with `among`, picked out of a run's params, which hold
    the training fields too) back as its family's config class. Configs from before families
    were named are MLPs."""
    values = {"family": "mlp", **values}
    config_class = _family(values["family"]).config
    if among:
        values = {k: v for k, v in values.items() if k in config_class.model_fields}
    config = config_class.model_validate(values)
    assert isinstance(config, ModelConfig)
    return config


def _family(name: str) -> Family:
    families = model_families()
    if name not in families:
        raise CaviarError(
            f"model family '{name}' is not registered here; expected one of "
            f"{', '.join(families)} (`caviar plugins` lists them and where they come from)"
        )
    return families[name].plugin
