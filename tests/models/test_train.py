import math

import pytest
import torch

from caviar.models.config import LrSchedule, MlpConfig, TrainConfig
from caviar.models.data import build_dataset
from caviar.models.errors import CaviarError
from caviar.models.optim import lr_factor
from caviar.models.sources import DigitsSource
from caviar.models.train import Decision, Outcome, Trainer, choose_device, fit


@pytest.fixture(scope="module")
def digits():
    return build_dataset(DigitsSource(source="digits"))


SMALL = MlpConfig(hidden_units=32, layers=1)


def test_training_lowers_the_loss_and_learns(digits):
    trainer = Trainer(digits, SMALL, TrainConfig(epochs=5, lr=0.05), threads=1)
    history = [trainer.run_epoch() for _ in range(5)]
    assert history[-1].train_loss < history[0].train_loss / 2
    assert history[-1].val_accuracy > 0.9
    assert [m.epoch for m in history] == [1, 2, 3, 4, 5] and trainer.finished


def test_divergence_is_reported_not_raised(digits):
    config = TrainConfig(epochs=5, lr=1e12, momentum=0.99)
    outcome, history, _ = fit(
        digits,
        MlpConfig(hidden_units=32, layers=2, batch_norm=False),
        config,
        lambda m: Decision.CONTINUE,
    )
    assert outcome is Outcome.DIVERGED
    assert history[-1].diverged and not math.isfinite(history[-1].train_loss)


def test_fit_stops_when_told(digits):
    seen = []

    def stop_after_two(metrics):
        seen.append(metrics.epoch)
        return Decision.STOP if metrics.epoch == 2 else Decision.CONTINUE

    outcome, history, _ = fit(digits, SMALL, TrainConfig(epochs=6), stop_after_two)
    assert outcome is Outcome.STOPPED and seen == [1, 2] and len(history) == 2


def test_same_seed_same_curve(digits):
    config = TrainConfig(epochs=2, lr=0.05, seed=11)
    a = [Trainer(digits, SMALL, config, threads=1).run_epoch() for _ in range(1)]
    b = [Trainer(digits, SMALL, config, threads=1).run_epoch() for _ in range(1)]
    assert a[0].train_loss == b[0].train_loss and a[0].val_accuracy == b[0].val_accuracy


@pytest.mark.parametrize(
    ("schedule", "epoch", "factor"),
    [
        (LrSchedule.CONSTANT, 5, 1.0),
        (LrSchedule.INVERSE, 4, 1 / (1 + 0.5 * 4)),
        (LrSchedule.EXPONENTIAL, 3, math.exp(-0.5 * 3)),
    ],
)
def test_learning_rate_decay(schedule, epoch, factor):
    assert lr_factor(schedule, 0.5, epoch) == pytest.approx(factor)


def test_trainer_applies_the_decayed_rate(digits):
    config = TrainConfig(epochs=3, lr=0.1, lr_schedule="inverse", lr_decay=1.0)
    trainer = Trainer(digits, SMALL, config, threads=1)
    rates = [trainer.run_epoch().lr for _ in range(3)]
    assert rates == pytest.approx([0.1, 0.05, 0.1 / 3])


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_optimisers_take_the_configured_betas(digits, name):
    config = TrainConfig(
        optimizer=name, lr=0.01, momentum=0.8, beta1=0.85, beta2=0.95, eps=1e-6, weight_decay=1e-4
    )
    group = Trainer(digits, SMALL, config).optimizer.param_groups[0]
    assert group["weight_decay"] == 1e-4
    if name == "sgd":
        assert group["momentum"] == 0.8
    elif name == "rmsprop":
        assert (group["alpha"], group["momentum"], group["eps"]) == (0.95, 0.8, 1e-6)
    else:
        assert group["betas"] == (0.85, 0.95) and group["eps"] == 1e-6


def test_batch_of_one_is_folded_into_the_previous_batch(digits):
    # 1079 training rows with batch 2 leave one row over; BatchNorm would refuse a batch of 1.
    n = len(digits.y_train)
    size = n - 1 if n % 2 else n - 2
    config = TrainConfig(epochs=1, batch_size=size)
    metrics = Trainer(digits, SMALL, config).run_epoch()
    assert math.isfinite(metrics.train_loss)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown where CUDA is absent")
def test_asking_for_cuda_without_one_is_a_clear_error():
    with pytest.raises(CaviarError, match=r"train\.device is 'cuda'"):
        choose_device("cuda")
    assert choose_device("auto").type == "cpu"
