"""What one trial trains: the network's shape and how it is trained, as typed configs.

Plain pydantic, no torch: the driver builds and validates these without importing training code,
and every field may also be searched in a spec's `space`. Names follow the course notes:
`momentum` is SGD's beta, `beta2` the decay of the squared-gradient average (RMSprop's `alpha`
in PyTorch, Adam's second beta), `beta1` Adam's first.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Activation(StrEnum):
    RELU = "relu"
    TANH = "tanh"
    GELU = "gelu"


class OptimizerName(StrEnum):
    SGD = "sgd"
    RMSPROP = "rmsprop"
    ADAM = "adam"


class LrSchedule(StrEnum):
    CONSTANT = "constant"
    INVERSE = "inverse"  # lr / (1 + decay * epoch)
    EXPONENTIAL = "exponential"  # lr * exp(-decay * epoch)


class ModelConfig(BaseModel):
    """Shape of a network: `family` names the model family (see `caviar.models.families`), the
    other fields are that family's, and every one of them may be searched in a spec's `space`.
    A plugin family's config subclasses this with `family: Literal["<its name>"]`."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(description="The model family: mlp, cnn1d, or a plugin's.")


class MlpConfig(ModelConfig):
    """`layers` blocks of Linear -> BatchNorm1d -> activation, then a linear softmax head."""

    family: Literal["mlp"] = "mlp"
    hidden_units: int = Field(128, ge=1, le=65536, description="Width of every hidden layer.")
    layers: int = Field(2, ge=1, le=256, description="Number of hidden blocks.")
    batch_norm: bool = Field(True, description="BatchNorm1d after each hidden Linear layer.")
    activation: Activation = Field(Activation.RELU, description="Non-linearity of hidden blocks.")


class Cnn1dConfig(ModelConfig):
    """The features read as one channel of length n: `blocks` of Conv1d (no bias) ->
    BatchNorm1d -> ReLU (-> max pooling by 2), global average pooling, dropout, a linear
    softmax head."""

    family: Literal["cnn1d"] = "cnn1d"
    channels: int = Field(32, ge=1, le=65536, description="Channels of every convolution.")
    blocks: int = Field(3, ge=1, le=256, description="Number of convolution blocks.")
    kernel_size: int = Field(
        5, ge=1, le=4097, description="Width of every convolution kernel (odd)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the head.")
    pool: bool = Field(True, description="Halve the length after each block (max pooling).")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length padding), but got {size}")
        return size


class TrainConfig(BaseModel):
    """How one network is trained; every field may also be searched in a spec's `space`."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, le=100_000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=2, le=2**20, description="Mini-batch size.")
    optimizer: OptimizerName = Field(OptimizerName.SGD, description="sgd, rmsprop or adam.")
    lr: float = Field(0.01, gt=0, description="Initial learning rate (alpha).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD/RMSprop momentum (beta).")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam's first-moment decay.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Squared-gradient decay (Adam, RMSprop).")
    eps: float = Field(1e-8, gt=0, description="Adam/RMSprop epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty coefficient.")
    lr_schedule: LrSchedule = Field(LrSchedule.CONSTANT, description="Learning-rate decay form.")
    lr_decay: float = Field(0.0, ge=0, description="Decay rate of the schedule, per epoch.")
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of weight initialisation and batch order."
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
