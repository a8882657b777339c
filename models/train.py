"""One trial's training: epochs of mini-batch descent, each ending in a report.

`Trainer.run_epoch()` trains one epoch and returns its metrics; whoever drives it (the sweep's
worker, or `fit` for a single babysat model) decides after each epoch whether to go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset
from caviar.models.errors import CaviarError
from caviar.models.families import build_network
from caviar.models.metrics import EpochMetrics
from caviar.models.optim import TrialOptimizer, lr_factor


class EpochAborted(Exception):
    """The epoch was stopped from outside, between two mini-batches: its result is not wanted
    (the driver pruned or released the trial while the worker trained ahead)."""


class Decision(Enum):
    """What the driver tells a trainer after an epoch."""

    CONTINUE = "continue"
    STOP = "stop"


def choose_device(preference: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA where there is none is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise CaviarError(f"train.device is '{preference}' but no CUDA device is visible")
    try:
        return torch.device(preference)
    except RuntimeError:
        raise CaviarError(
            f"train.device: '{preference}' is not a device; expected auto, cpu, cuda or cuda:N"
        ) from None


class Trainer:
    """Holds one network, its optimiser and the data on the chosen device."""

    def __init__(
        self, data: Dataset, model: ModelConfig, train: TrainConfig, threads: int | None = None
    ) -> None:
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.config = train
        self.device = choose_device(train.device)
        torch.manual_seed(train.seed)
        self.network = build_network(data.n_features, data.n_classes, model).to(self.device)
        self.optimizer = TrialOptimizer(self.network.parameters(), train)
        self._batch_order = torch.Generator().manual_seed(train.seed)
        self._x_train, self._y_train = self._tensors(data.x_train, data.y_train)
        self._x_val, self._y_val = self._tensors(data.x_val, data.y_val)
        self.epoch = 0

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def run_epoch(self, stop: Callable[[], bool] | None = None) -> EpochMetrics:
        """Train one epoch, then evaluate on the validation split in eval mode. `stop` is
        asked between mini-batches; when it says so, `EpochAborted` is raised."""
        start = time.perf_counter()
        lr = self.config.lr * lr_factor(self.config.lr_schedule, self.config.lr_decay, self.epoch)
        self.optimizer.lr = lr
        train_loss = self._train_one_pass(stop)
        val_loss, val_accuracy = self.evaluate(self._x_val, self._y_val)
        self.epoch += 1
        return EpochMetrics(
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            seconds=time.perf_counter() - start,
        )

    def weights(self) -> dict[str, np.ndarray]:
        """The network's state (parameters and BatchNorm running statistics) as NumPy arrays,
        which the driver keeps without loading torch."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.network.state_dict().items()}

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy with BatchNorm's running averages (eval mode)."""
        self.network.eval()
        with torch.no_grad():
            logits = self.network(x)
            loss = F.cross_entropy(logits, y).item()
            accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        return loss, accuracy

    def _train_one_pass(self, stop: Callable[[], bool] | None = None) -> float:
        self.network.train()
        n = len(self._y_train)
        order = torch.randperm(n, generator=self._batch_order).to(self.device)
        size = self.config.batch_size
        # BatchNorm cannot normalise a batch of one in training mode: fold a lone last sample
        # into the previous batch by stopping one batch early.
        stops = [*range(size, n, size), n]
        if len(stops) > 1 and stops[-1] - stops[-2] < 2:
            stops.pop(-2)
        total = torch.zeros((), device=self.device)
        start = 0
        for end in stops:
            if stop is not None and stop():
                raise EpochAborted
            rows = order[start:end]
            loss = F.cross_entropy(self.network(self._x_train[rows]), self._y_train[rows])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(rows)
            start = end
        # One host sync per epoch; a NaN anywhere in the epoch makes the sum NaN.
        return (total / n).item()

    def _tensors(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.tensor copies: arrays from Ray's object store are read-only.
        return (
            torch.tensor(x, dtype=torch.float32, device=self.device),
            torch.tensor(y, dtype=torch.int64, device=self.device),
        )


class Outcome(Enum):
    """How a trial ended."""

    COMPLETE = "complete"
    STOPPED = "stopped"  # the driver said stop (pruned)
    DIVERGED = "diverged"


def fit(
    data: Dataset,
    model: ModelConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochMetrics], Decision],
    threads: int | None = None,
) -> tuple[Outcome, list[EpochMetrics], nn.Module]:
    """Train until the budget is spent, `on_epoch` says stop, or the loss stops being finite."""
    trainer = Trainer(data, model, train, threads=threads)
    history: list[EpochMetrics] = []
    while not trainer.finished:
        metrics = trainer.run_epoch()
        history.append(metrics)
        decision = on_epoch(metrics)
        if metrics.diverged:
            return Outcome.DIVERGED, history, trainer.network
        if decision is Decision.STOP and not trainer.finished:
            return Outcome.STOPPED, history, trainer.network
    return Outcome.COMPLETE, history, trainer.network
