"""Packed trials: several same-shape networks trained as one batched model in one process.

Small networks leave most of a core (and nearly all of a GPU) idle; training K of them as one
model with batched matrix products fills it. Each member keeps everything that makes it its
own trial: its initial weights (built from its own seed, as `Trainer` builds them), its data
order (its own generator), its own BatchNorm statistics, its learning rate, momentum, betas,
eps, weight decay and schedule (`PackedOptimizer`). The members' losses are summed before
the backward pass, so no gradient crosses from one member to another, and each member's curve
is the one it would have had alone, up to floating-point rounding.

Any family's network packs: the members' parameters are stacked (`torch.func`) and the
network runs under `vmap`; a chain of the built-in families' layers runs as batched tensor
operations instead (`packed_layers`: batched matrix products, grouped convolutions), faster.
Members must share the architecture (model config), batch size, optimizer kind and device; a
network with dropout would draw its masks differently from a lone run, so it does not pack
(`packable` says why). A member that is pruned, diverges or finishes its epochs is removed;
the others go on undisturbed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.families import build_network
from caviar.models.metrics import EpochMetrics
from caviar.models.optim import lr_factor
from caviar.models.packed_layers import forward_by_layer, runs_by_layer
from caviar.models.packed_optim import PackedOptimizer
from caviar.models.packs import packable
from caviar.models.train import EpochAborted, choose_device


class PackedTrainer:
    """K trials of one shape, one epoch per call for all of them (keys name the members)."""

    def __init__(self, data: Dataset, model: ModelConfig, trains: dict[int, TrainConfig],
                 threads: int | None = None) -> None:  # fmt: skip
        reason = packable(model, list(trains.values()))
        if reason is not None:
            raise ValueError(f"cannot pack these trials: {reason}")
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        first = next(iter(trains.values()))
        self.device = choose_device(first.device)
        self.model, self._sizes = model, (data.n_features, data.n_classes)
        self.keys = list(trains)
        self.configs = list(trains.values())
        self.epochs = [0] * len(trains)  # each member's epochs so far (one may join later)
        networks = [self._network(config) for config in self.configs]
        params, buffers = stack_module_state(networks)
        self.params = {k: v.to(self.device).detach().requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.to(self.device) for k, v in buffers.items()}
        self._shape = copy.deepcopy(networks[0]).to("meta")
        self.by_layer = runs_by_layer(self._shape)

        def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self._shape, (p, b), (x,))

        self._vmapped = vmap(forward)  # each member its own batch
        self._vmapped_eval = vmap(forward, in_dims=(0, 0, None))  # all members, same inputs
        self.optimizer = PackedOptimizer(list(self.params.values()), self.configs)
        self._orders = [torch.Generator().manual_seed(c.seed) for c in self.configs]
        self._x_train, self._y_train = self._tensors(data.x_train, data.y_train)
        self._x_val, self._y_val = self._tensors(data.x_val, data.y_val)

    def _network(self, config: TrainConfig) -> nn.Module:
        """A member's network, its weights from its own seed, as `Trainer` builds it alone."""
        torch.manual_seed(config.seed)
        return build_network(*self._sizes, self.model)

    @property
    def size(self) -> int:
        return len(self.keys)

    def run_epoch(self, stop: Callable[[], bool] | None = None) -> dict[int, EpochMetrics]:
        """Train every member one epoch and evaluate each; metrics by member key. `stop` is
        asked between mini-batches (`EpochAborted` when it says so), as in `Trainer`."""
        start = time.perf_counter()
        lrs = [c.lr * lr_factor(c.lr_schedule, c.lr_decay, e)
               for c, e in zip(self.configs, self.epochs, strict=True)]  # fmt: skip
        self.optimizer.lr = torch.tensor(lrs, dtype=self.optimizer.lr.dtype, device=self.device)
        train_losses = self._train_one_pass(stop)
        val_losses, accuracies = self._evaluate()
        self.epochs = [e + 1 for e in self.epochs]
        seconds = (time.perf_counter() - start) / self.size  # each member's share
        return {
            key: EpochMetrics(
                self.epochs[i],
                float(train_losses[i]),
                float(val_losses[i]),
                float(accuracies[i]),
                lrs[i],
                seconds,
            )
            for i, key in enumerate(self.keys)
        }

    def add(self, key: int, config: TrainConfig) -> None:
        """Trial `key` joins the pack between two epochs, from its own first epoch: its
        weights, data order and optimiser state start as they would alone."""
        reason = packable(self.model, [*self.configs, config])
        if reason is not None:
            raise ValueError(f"trial {key} cannot join this pack: {reason}")
        params, buffers = stack_module_state([self._network(config)])
        joined = {k: v.detach().to(self.device) for k, v in params.items()}
        self.params = {k: torch.cat([v.detach(), joined[k]]).requires_grad_()
                       for k, v in self.params.items()}  # fmt: skip
        self.buffers = {
            k: torch.cat([v, buffers[k].to(self.device)]) for k, v in self.buffers.items()
        }
        self.optimizer.add(config, list(self.params.values()))
        self.keys.append(key)
        self.configs.append(config)
        self.epochs.append(0)
        self._orders.append(torch.Generator().manual_seed(config.seed))

    def remove(self, key: int) -> None:
        """Member `key` leaves the pack (pruned, diverged, done, failed)."""
        kept = [i for i, k in enumerate(self.keys) if k != key]
        rows = torch.tensor(kept, dtype=torch.long, device=self.device)
        index = self.keys.index(key)
        del self.keys[index], self.configs[index], self._orders[index], self.epochs[index]
        self.params = {k: v.detach()[rows].requires_grad_() for k, v in self.params.items()}
        self.buffers = {k: v[rows] for k, v in self.buffers.items()}
        self.optimizer.keep(rows, list(self.params.values()))

    def state_dict(self, key: int) -> dict[str, torch.Tensor]:
        """Member `key`'s network state, as its own network's `state_dict` would be."""
        i = self.keys.index(key)
        both = {**self.params, **self.buffers}
        return {k: v[i].detach().clone() for k, v in both.items()}

    def weights(self, key: int) -> dict[str, np.ndarray]:
        """Member `key`'s state as NumPy arrays, as `Trainer.weights` gives a lone trial's."""
        return {k: v.cpu().numpy() for k, v in self.state_dict(key).items()}

    def _train_one_pass(self, stop: Callable[[], bool] | None) -> torch.Tensor:
        n, size = len(self._y_train), self.configs[0].batch_size
        orders = torch.stack([torch.randperm(n, generator=g) for g in self._orders])
        orders = orders.to(self.device)
        stops = [*range(size, n, size), n]
        if len(stops) > 1 and stops[-1] - stops[-2] < 2:  # as `Trainer`: no batch of one
            stops.pop(-2)
        total = torch.zeros(self.size, device=self.device)
        start = 0
        for end in stops:
            if stop is not None and stop():
                raise EpochAborted
            rows = orders[:, start:end].flatten()  # each member's batch, one after another
            x = self._x_train.index_select(0, rows).view(self.size, end - start, -1)
            labels = self._y_train.index_select(0, rows).view(self.size, -1)
            losses = _member_losses(self._forward(x, training=True), labels).mean(dim=1)
            self.optimizer.zero_grad()
            losses.sum().backward()  # members do not share a parameter: grads stay apart
            self.optimizer.step()
            total += losses.detach() * (end - start)
            start = end
        return (total / n).cpu()

    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self._forward(self._x_val, training=False)
            labels = self._y_val.expand(self.size, -1)
            losses = _member_losses(logits, labels).mean(dim=1)
            accuracy = (logits.argmax(dim=2) == labels).float().mean(dim=1)
        return losses.cpu(), accuracy.cpu()

    def _forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """Logits (members, batch, classes) of `x`: (members, batch, features) in training,
        (batch, features) shared by all members in evaluation."""
        if self._shape.training != training:  # `train` walks every module: not on each batch
            self._shape.train(training)
        if isinstance(self._shape, nn.Sequential) and self.by_layer:
            return forward_by_layer(self._shape, self.params, self.buffers, x, training)
        if training:
            return self._vmapped(self.params, self.buffers, x)
        return self._vmapped_eval(self.params, self.buffers, x)

    def _tensors(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.tensor(x, dtype=torch.float32, device=self.device),
            torch.tensor(y, dtype=torch.int64, device=self.device),
        )


def _member_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's cross-entropy per sample: logits (members, batch, classes), labels
    (members, batch). The classes go in dimension 1 (`cross_entropy`'s (N, C, d) form), not
    last: PyTorch's CPU log-softmax over a short last dimension is slow (2,048 x 10 logits,
    one thread: 360 us forward and backward against 90 us), and its losses and gradients
    came out the same to the bit."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
