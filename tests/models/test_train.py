import importlib
import math
import subprocess
import sys

import pytest
import torch

from caviar.models.config import LrSchedule, MlpConfig, TrainConfig
from caviar.models.data import build_dataset
from caviar.models.errors import CaviarError
from caviar.models.optim import TrialOptimizer, lr_factor
from caviar.models.sources import DigitsSource
from caviar.models.train import Decision, Outcome, Trainer, choose_device, fit
from tests.models.torch_optimisers import TORCH_CLASSES


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


@pytest.mark.parametrize("momentum", [0.0, 0.8])
@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_the_trial_optimiser_moves_weights_as_torch_optim_does(name, momentum, monkeypatch):
    module = importlib.import_module(f"torch.optim.{name}")  # where its update functions are
    multi_tensor_runs = []
    update = getattr(module, f"_multi_tensor_{name}")

    def counted(*args, **kwargs):
        multi_tensor_runs.append(1)
        return update(*args, **kwargs)

    monkeypatch.setattr(module, f"_multi_tensor_{name}", counted)
    config = TrainConfig(
        optimizer=name, lr=0.01, momentum=momentum, beta1=0.85, beta2=0.95, eps=1e-6,
        weight_decay=1e-4,
    )  # fmt: skip
    torch.manual_seed(0)
    ours = [torch.randn(5, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    optimizer, reference = TrialOptimizer(ours, config), TORCH_CLASSES[name](theirs, config)
    for step in range(6):
        lr = 0.01 / (1 + step)  # a decaying rate, set between steps as the trainer does
        optimizer.lr = lr
        for group in reference.param_groups:
            group["lr"] = lr
        gradients = [torch.randn_like(p) for p in ours]
        if step == 2:  # a step where one parameter got no gradient: it and its state stay
            gradients[1] = None
        for params in (ours, theirs):
            for p, g in zip(params, gradients, strict=True):
                p.grad = None if g is None else g.clone()
        optimizer.step()
        reference.step()
        for mine, expected in zip(ours, theirs, strict=True):
            assert torch.equal(mine, expected), f"step {step}"
    assert len(multi_tensor_runs) == 12  # both optimisers, six steps: the multi-tensor path


def test_training_a_trial_leaves_torch_dynamo_unloaded():
    # Loading it costs a fresh worker 0.87 s before its first epoch (this machine).
    script = (
        "import sys\n"
        "from caviar.models.config import MlpConfig, TrainConfig\n"
        "from caviar.models.data import build_dataset\n"
        "from caviar.models.sources import DigitsSource\n"
        "from caviar.models.train import Trainer\n"
        "data = build_dataset(DigitsSource(source='digits'))\n"
        "for name in ('sgd', 'rmsprop', 'adam'):\n"
        "    config = TrainConfig(optimizer=name, epochs=1, momentum=0.5)\n"
        "    Trainer(data, MlpConfig(hidden_units=8, layers=1), config).run_epoch()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


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
