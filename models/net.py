"""The `mlp` family: `layers` x (Linear -> BatchNorm1d -> activation), then a linear softmax
head; and what every family's network is wrapped in to be deployed.

With batch norm on, the hidden Linear layers carry no bias: BatchNorm subtracts the batch mean,
which cancels any bias, and its own shift (beta) plays that role. The head returns logits; the
softmax lives in the loss (`cross_entropy` = log-softmax + negative log-likelihood), which is
numerically safer than a softmax layer followed by a log.
"""

from __future__ import annotations

import torch
from torch import nn

from caviar.models.config import Activation, MlpConfig

_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.GELU: nn.GELU,
}


def build_mlp(n_features: int, n_classes: int, config: MlpConfig) -> nn.Sequential:
    """An MLP mapping (batch, n_features) inputs to (batch, n_classes) logits."""
    blocks: list[nn.Module] = []
    width = n_features
    for _ in range(config.layers):
        blocks.append(nn.Linear(width, config.hidden_units, bias=not config.batch_norm))
        if config.batch_norm:
            blocks.append(nn.BatchNorm1d(config.hidden_units))
        blocks.append(_ACTIVATIONS[config.activation]())
        width = config.hidden_units
    blocks.append(nn.Linear(width, n_classes))
    return nn.Sequential(*blocks)


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics, so a model takes raw inputs."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def deployable(network: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> nn.Sequential:
    """Raw inputs in, class probabilities out: scaling, the network, softmax; in eval mode."""
    return nn.Sequential(Standardize(mean, std), network, nn.Softmax(dim=1)).eval()


def predict_proba(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities: the softmax of the logits, computed in eval mode."""
    network.eval()
    with torch.no_grad():
        return torch.softmax(network(x), dim=1)
