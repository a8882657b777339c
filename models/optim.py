"""Optimisers and learning-rate decay, built from a `TrainConfig` (names as in `config`)."""

from __future__ import annotations

import math

import torch

from caviar.models.config import LrSchedule, OptimizerName, TrainConfig


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
