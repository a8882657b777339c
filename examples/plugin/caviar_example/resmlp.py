"""`resmlp`: an MLP with residual blocks, Linear (no bias) -> BatchNorm1d -> ReLU, each added
to its input, then a linear head (caviar's loss applies the softmax)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from caviar.models.config import ModelConfig
from caviar.models.plugins import Family


class ResMlpConfig(ModelConfig):
    family: Literal["resmlp"] = "resmlp"
    width: int = Field(64, ge=1, description="Width of the stem and of every residual block.")
    blocks: int = Field(2, ge=0, description="Number of residual blocks.")


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def build(n_features: int, n_classes: int, config: ResMlpConfig) -> nn.Module:
    stem = [
        nn.Linear(n_features, config.width, bias=False),
        nn.BatchNorm1d(config.width),
        nn.ReLU(),
    ]
    blocks = [Residual(config.width) for _ in range(config.blocks)]
    return nn.Sequential(*stem, *blocks, nn.Linear(config.width, n_classes))


FAMILY = Family(config=ResMlpConfig, build=build)
