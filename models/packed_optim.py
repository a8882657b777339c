"""One optimiser step for many packed trials at once, each with its own hyperparameters.

A packed parameter is stacked along dimension 0 (one slice per trial); every hyperparameter
is a tensor with one value per trial, broadcast over the slice. The update rules are
PyTorch's own SGD (momentum, L2 weight decay), RMSprop and Adam, written out so that each
trial's slice moves exactly as it would under its own `torch.optim` optimiser.
"""

from __future__ import annotations

import torch

from caviar.models.config import OptimizerName, TrainConfig


class PackedOptimizer:
    def __init__(self, params: list[torch.Tensor], configs: list[TrainConfig]) -> None:
        kinds = {c.optimizer for c in configs}
        if len(kinds) != 1:
            raise ValueError(f"a pack shares one optimizer kind, got {sorted(map(str, kinds))}")
        self.kind = kinds.pop()
        self.params = params
        device = params[0].device

        def per_trial(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=params[0].dtype, device=device)

        self.lr = per_trial([c.lr for c in configs])  # set each epoch from the schedule
        self.momentum = per_trial([c.momentum for c in configs])
        self.beta1 = per_trial([c.beta1 for c in configs])
        self.beta2 = per_trial([c.beta2 for c in configs])
        self.eps = per_trial([c.eps for c in configs])
        self.weight_decay = per_trial([c.weight_decay for c in configs])
        self.steps = torch.zeros(len(configs), dtype=params[0].dtype, device=device)
        self.first = [torch.zeros_like(p) for p in params]  # momentum buffer / Adam's m
        self.second = [torch.zeros_like(p) for p in params]  # RMSprop's / Adam's v

    def keep(self, rows: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Only the trials at `rows` go on (`params` are the kept slices of the parameters)."""
        self.params = params
        for name in ("lr", "momentum", "beta1", "beta2", "eps", "weight_decay", "steps"):
            setattr(self, name, getattr(self, name)[rows])
        self.first = [s[rows] for s in self.first]
        self.second = [s[rows] for s in self.second]

    def add(self, config: TrainConfig, params: list[torch.Tensor]) -> None:
        """A trial joins as the last row (`params` now have its slice), with fresh state."""
        if config.optimizer is not self.kind:
            raise ValueError(
                f"a pack shares one optimizer kind: {self.kind}, not {config.optimizer}"
            )
        self.params = params
        for name, value in [("lr", config.lr), ("momentum", config.momentum),
                            ("beta1", config.beta1), ("beta2", config.beta2), ("eps", config.eps),
                            ("weight_decay", config.weight_decay), ("steps", 0.0)]:  # fmt: skip
            column = getattr(self, name)
            setattr(self, name, torch.cat([column, column.new_tensor([value])]))
        self.first = [torch.cat([s, s.new_zeros((1, *s.shape[1:]))]) for s in self.first]
        self.second = [torch.cat([s, s.new_zeros((1, *s.shape[1:]))]) for s in self.second]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1  # each trial's own count: one that joined later has taken fewer
        for p, first, second in zip(self.params, self.first, self.second, strict=True):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad + self.weight_decay.view(shape) * p
            lr = self.lr.view(shape)
            if self.kind is OptimizerName.SGD:
                first.mul_(self.momentum.view(shape)).add_(grad)
                p.sub_(lr * first)
            elif self.kind is OptimizerName.RMSPROP:
                alpha = self.beta2.view(shape)
                second.mul_(alpha).add_((1 - alpha) * grad * grad)
                first.mul_(self.momentum.view(shape)).add_(
                    grad / (second.sqrt() + self.eps.view(shape))
                )
                p.sub_(lr * first)
            else:
                b1, b2 = self.beta1.view(shape), self.beta2.view(shape)
                first.mul_(b1).add_((1 - b1) * grad)
                second.mul_(b2).add_((1 - b2) * grad * grad)
                steps = self.steps.view(shape)
                correction1 = 1 - b1**steps
                correction2 = (1 - b2**steps).sqrt()
                denominator = second.sqrt() / correction2 + self.eps.view(shape)
                p.sub_(lr / correction1 * first / denominator)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
