"""The `cnn1d` family: a 1-D convolutional network over the features read as one signal.

Each block is Conv1d without bias -> BatchNorm1d -> ReLU (BatchNorm's shift replaces the bias),
optionally followed by max pooling that halves the length; global average pooling then makes
the network independent of the input length, and a linear head gives the logits (the softmax
lives in the cross-entropy loss).
"""

from __future__ import annotations

from torch import nn

from caviar.models.config import Cnn1dConfig


def build_cnn1d(n_features: int, n_classes: int, config: Cnn1dConfig) -> nn.Sequential:
    """(batch, n_features) inputs, read as (batch, 1 channel, n_features), to logits."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, n_features))]
    channels, length = 1, n_features
    for _ in range(config.blocks):
        layers += [
            nn.Conv1d(channels, config.channels, config.kernel_size,
                      padding=config.kernel_size // 2, bias=False),
            nn.BatchNorm1d(config.channels),
            nn.ReLU(),
        ]  # fmt: skip
        if config.pool and length >= 2:
            layers.append(nn.MaxPool1d(2))
            length //= 2
        channels = config.channels
    layers += [
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Dropout(config.dropout),
        nn.Linear(channels, n_classes),
    ]
    return nn.Sequential(*layers)
