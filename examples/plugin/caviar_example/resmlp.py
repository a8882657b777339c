"""`resmlp`: an MLP with residual blocks, Linear (no bias) -> BatchNorm1d -> ReLU, each added
to its input, then a linear head (caviar's loss applies the softmax)."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_mlp(n_features: int, n_classes: int, width: int, blocks: int) -> nn.Module:
    stem = [nn.Linear(n_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
    residuals = [Residual(width) for _ in range(blocks)]
    return nn.Sequential(*stem, *residuals, nn.Linear(width, n_classes))
