"""What the `caviar.models` entry point names: the `resmlp` config and its builder.

This module stays free of torch: caviar reads it to validate specs on the driver, which never
trains. The network itself (`resmlp`) is imported when a worker builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from caviar.models.config import ModelConfig
from caviar.models.plugins import Family

if TYPE_CHECKING:
    from torch import nn


class ResMlpConfig(ModelConfig):
    family: Literal["resmlp"] = "resmlp"
    width: int = Field(64, ge=1, description="Width of the stem and of every residual block.")
    blocks: int = Field(2, ge=0, description="Number of residual blocks.")


def build(n_features: int, n_classes: int, config: ResMlpConfig) -> nn.Module:
    from caviar_example.resmlp import residual_mlp

    return residual_mlp(n_features, n_classes, config.width, config.blocks)


FAMILY = Family(config=ResMlpConfig, build=build)
