"""Optimisers and learning-rate decay, built from a `TrainConfig`.

Names follow the course notes: `momentum` is SGD's beta, `beta2` is the decay of the squared
gradient average (RMSprop's `alpha` in PyTorch, Adam's second beta), `beta1` is Adam's first.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from models.train import TrainConfig


class OptimizerName(StrEnum):
    SGD = "sgd"
    RMSPROP = "rmsprop"
    ADAM = "adam"


class LrSchedule(StrEnum):
    CONSTANT = "constant"
    INVERSE = "inverse"  # lr / (1 + decay * epoch)
    EXPONENTIAL = "exponential"  # lr * exp(-decay * epoch)


def build_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser with L2 weight decay (`weight_decay` adds `wd * w` to each gradient)."""
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer is OptimizerName.RMSPROP:
        return torch.optim.RMSprop(
            params,
            lr=config.lr,
            alpha=config.beta2,
            eps=config.eps,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        params,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def lr_factor(schedule: LrSchedule, decay: float, epoch: int) -> float:
    """Multiplier of the initial learning rate for 0-based `epoch`."""
    if schedule is LrSchedule.INVERSE:
        return 1.0 / (1.0 + decay * epoch)
    if schedule is LrSchedule.EXPONENTIAL:
        return math.exp(-decay * epoch)
    return 1.0
