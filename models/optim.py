"""Optimisers and learning-rate decay, built from a `TrainConfig` (names as in `config`).

A trial's optimiser calls torch's own update functions (`torch.optim.sgd.sgd`, `adam.adam`,
`rmsprop.rmsprop`: what the `torch.optim` classes run in `step`) and keeps their state here.
The classes import `torch._dynamo` on first use (for `torch.compile` support we never use):
0.87 s of CPU in every fresh worker process on this machine, on the way to its first epoch.
The functions do not, and they skip the classes' per-step wrappers: small networks train
about a tenth more epochs per second (`make bench-packing`'s lone runs, widths 32 and 128).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import adam, rmsprop, sgd

from caviar.models.config import LrSchedule, OptimizerName, TrainConfig


class TrialOptimizer:
    """One trial's optimiser: `step()` after each `backward()`; `lr` may change between steps.
    SGD with momentum, RMSprop or Adam, each with L2 weight decay (`wd * w` added to each
    gradient), as `torch.optim.SGD`, `RMSprop` and `Adam` with the same settings."""

    def __init__(self, params: Iterable[torch.Tensor], config: TrainConfig) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.config = config
        self.lr = config.lr
        kind = config.optimizer
        n = len(self.params)
        # The classes' state, per parameter: step counts as scalars on the CPU, in double only
        # where that is the default (as torch.optim's `_get_scalar_dtype`).
        double = torch.get_default_dtype() == torch.float64
        step_dtype = torch.float64 if double else torch.float32
        self._steps = [torch.tensor(0.0, dtype=step_dtype) for _ in range(n)]
        self._first: list[torch.Tensor | None] = (  # momentum buffer / Adam's first moment
            [None] * n
            if kind is OptimizerName.SGD
            else self._zeros()
            if kind is OptimizerName.ADAM or config.momentum != 0
            else []
        )
        self._second = [] if kind is OptimizerName.SGD else self._zeros()  # squared gradients

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (the others and their state
        are left as they are, as `torch.optim` does)."""
        rows = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not rows:
            return
        params = [self.params[i] for i in rows]
        grads = [p.grad for p in params]
        steps = [self._steps[i] for i in rows]
        first = [self._first[i] for i in rows] if self._first else []
        second = [self._second[i] for i in rows] if self._second else []
        self._update(params, grads, first, second, steps)
        for i, buffer in zip(rows, first, strict=False):  # SGD makes its buffers on first use
            self._first[i] = buffer

    def _update(self, params, grads, first, second, steps) -> None:
        """torch's multi-tensor ("foreach") updates, its default on CUDA, on the CPU too: one
        call per operation over all the parameters. MLP of width 32, batch 128, one thread:
        a step 40 -> 31 us with SGD and 123 -> 90 us with Adam."""
        c = self.config
        if c.optimizer is OptimizerName.SGD:
            sgd.sgd(params, grads, first, weight_decay=c.weight_decay, momentum=c.momentum,
                    lr=self.lr, dampening=0.0, nesterov=False, maximize=False,
                    foreach=True)  # fmt: skip
        elif c.optimizer is OptimizerName.RMSPROP:
            rmsprop.rmsprop(params, grads, second, [], first, steps, lr=self.lr, alpha=c.beta2,
                            eps=c.eps, weight_decay=c.weight_decay, momentum=c.momentum,
                            centered=False, foreach=True)  # fmt: skip
        else:
            adam.adam(params, grads, first, second, [], steps, amsgrad=False, beta1=c.beta1,
                      beta2=c.beta2, lr=self.lr, weight_decay=c.weight_decay, eps=c.eps,
                      maximize=False, foreach=True)  # fmt: skip

    def _zeros(self) -> list[torch.Tensor | None]:
        return [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]


def lr_factor(schedule: LrSchedule, decay: float, epoch: int) -> float:
    """Multiplier of the initial learning rate for 0-based `epoch`."""
    if schedule is LrSchedule.INVERSE:
        return 1.0 / (1.0 + decay * epoch)
    if schedule is LrSchedule.EXPONENTIAL:
        return math.exp(-decay * epoch)
    return 1.0
