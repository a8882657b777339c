"""What one trial trains: the network's shape and how it is trained, as typed configs.

Plain pydantic, no torch: the driver builds and validates these without importing training code,
and every field may also be searched in a spec's `space`. Names follow the course notes:
`momentum` is SGD's beta, `beta2` the decay of the squared-gradient average (RMSprop's `alpha`
in PyTorch, Adam's second beta), `beta1` Adam's first.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


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
    """Shape of the network; every field may also be searched in a spec's `space`."""

    model_config = ConfigDict(extra="forbid")

    hidden_units: int = Field(128, ge=1, description="Width of every hidden layer.")
    layers: int = Field(2, ge=1, description="Number of hidden blocks.")
    batch_norm: bool = Field(True, description="BatchNorm1d after each hidden Linear layer.")
    activation: Activation = Field(Activation.RELU, description="Non-linearity of hidden blocks.")


class TrainConfig(BaseModel):
    """How one network is trained; every field may also be searched in a spec's `space`."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="Passes over the training split.")
    batch_size: int = Field(128, ge=2, description="Mini-batch size.")
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
