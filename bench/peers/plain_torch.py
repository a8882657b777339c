"""The peers' training code: a batch-norm MLP trained with SGD in plain PyTorch, the loop a
user of Ray Tune or Optuna writes into their objective. `epochs()` yields once per epoch with
the validation accuracy, so the caller reports it and stops when its pruner says so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def mlp(n_features: int, n_classes: int, width: int, layers: int) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(n_features if i == 0 else width, width, bias=False),
                   nn.BatchNorm1d(width), nn.ReLU()]  # fmt: skip
    blocks.append(nn.Linear(width if layers else n_features, n_classes))
    return nn.Sequential(*blocks)


def epochs(config: dict[str, Any], data: dict[str, Any], max_epochs: int,
           seed: int = 0) -> Iterator[tuple[float, float, float]]:  # fmt: skip
    """Train `config` for up to `max_epochs`; yields (started, ended, val_accuracy) per epoch."""
    torch.manual_seed(seed)
    # Copies: Ray hands the arrays read-only, which `torch.from_numpy` warns about.
    x, y = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    x_val, y_val = torch.tensor(data["x_val"]), torch.tensor(data["y_val"])
    net = mlp(x.shape[1], int(y.max()) + 1, config["hidden_units"], config["layers"])
    optimizer = torch.optim.SGD(net.parameters(), lr=config["lr"],
                                momentum=1 - config["one_minus_momentum"],
                                weight_decay=config["weight_decay"])  # fmt: skip
    size = config["batch_size"]
    for _ in range(max_epochs):
        started = time.time()
        net.train()
        for rows in torch.randperm(len(y)).split(size):
            if len(rows) < 2:  # BatchNorm cannot train on a batch of one
                continue
            loss = F.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(x_val).argmax(1) == y_val).float().mean().item()
        yield started, time.time(), accuracy


def retrained(config: dict[str, Any], data: dict[str, Any], max_epochs: int,
              seeds: tuple[int, ...]) -> float:  # fmt: skip
    """Mean final validation accuracy of `config` trained anew on each of `seeds`: what a
    search found, without the luck of the one seed its best trial had."""
    finals = [[accuracy for _, _, accuracy in epochs(config, data, max_epochs, seed)][-1]
              for seed in seeds]  # fmt: skip
    return sum(finals) / len(finals)
