"""The cnn1d family: the features as one signal, conv blocks without bias before BatchNorm,
global average pooling, a linear head; it learns MNIST-1D where it should."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from caviar.models.config import Cnn1dConfig, TrainConfig
from caviar.models.data import build_dataset
from caviar.models.families import build_network
from caviar.models.sources import Mnist1dSource
from caviar.models.train import Trainer


def test_blocks_are_conv_without_bias_then_batchnorm_then_relu_then_pooling():
    network = build_network(40, 10, Cnn1dConfig(channels=8, blocks=2, kernel_size=5))
    kinds = [type(m) for m in network]
    assert kinds == [
        nn.Unflatten,
        nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.MaxPool1d,
        nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.MaxPool1d,
        nn.AdaptiveAvgPool1d, nn.Flatten, nn.Dropout, nn.Linear,
    ]  # fmt: skip
    convolutions = [m for m in network if isinstance(m, nn.Conv1d)]
    assert all(c.bias is None for c in convolutions) and convolutions[0].in_channels == 1
    assert network(torch.randn(7, 40)).shape == (7, 10)


def test_any_signal_length_and_no_pooling():
    network = build_network(13, 3, Cnn1dConfig(channels=4, blocks=5, kernel_size=3, pool=False))
    assert not any(isinstance(m, nn.MaxPool1d) for m in network)
    assert network(torch.randn(2, 13)).shape == (2, 3)


def test_kernel_size_must_be_odd():
    with pytest.raises(ValidationError, match="kernel_size must be odd"):
        Cnn1dConfig(kernel_size=4)


def test_it_learns_mnist1d_well_above_chance():
    data = build_dataset(Mnist1dSource(source="mnist1d", samples=3000, seed=1))
    train = TrainConfig(epochs=4, lr=0.05, batch_size=64)
    trainer = Trainer(data, Cnn1dConfig(channels=16), train, threads=1)
    accuracy = [trainer.run_epoch().val_accuracy for _ in range(4)][-1]
    assert accuracy > 0.5, "ten classes: chance is 0.1"
