"""Packed trials train as they would alone: same curves, members removed without disturbing
the others; what cannot pack says why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from caviar.models.config import TrainConfig
from caviar.models.data import build_dataset
from caviar.models.executor import TrialJob, run_to_completion
from caviar.models.families import model_config
from caviar.models.inprocess import InProcessExecutor
from caviar.models.packed import PackedTrainer
from caviar.models.packed_layers import runs_by_layer
from caviar.models.packed_optim import PackedOptimizer
from caviar.models.packs import group, packable
from caviar.models.sources import DigitsSource
from caviar.models.train import Trainer
from tests.models.torch_optimisers import TORCH_CLASSES

MLP = {"hidden_units": 24, "layers": 2}
CNN = {"family": "cnn1d", "channels": 6, "blocks": 2}
RESMLP = {"family": "resmlp", "width": 16, "blocks": 1}  # the example plugin's: runs under vmap


@pytest.fixture(scope="module")
def digits():
    return build_dataset(DigitsSource(source="digits"))


def members(optimizer: str = "sgd", **shared) -> dict[int, TrainConfig]:
    """Three trials of one shape, each with its own hyperparameters and seed."""
    settings = [(0.05, 0.9, 0.0, "constant", 11), (0.01, 0.5, 1e-3, "inverse", 12),
                (0.2, 0.0, 1e-4, "exponential", 13)]  # fmt: skip
    scale = 0.02 if optimizer != "sgd" else 1.0
    return {
        key: TrainConfig(
            epochs=4,
            batch_size=64,
            optimizer=optimizer,
            lr=lr * scale,
            momentum=momentum,
            weight_decay=decay,
            lr_schedule=schedule,
            lr_decay=0.2,
            seed=seed,
            **shared,
        )
        for key, (lr, momentum, decay, schedule, seed) in zip((7, 8, 9), settings, strict=True)
    }


def curves_side_by_side(data, model, trains, epochs, remove_after=None):
    """Each member's metrics packed and alone, epoch by epoch; member 8 leaves the pack
    after `remove_after` epochs (as a pruned trial would)."""
    packed = PackedTrainer(data, model, trains, threads=1)
    alone = {key: Trainer(data, model, train, threads=1) for key, train in trains.items()}
    pairs = []
    for epoch in range(epochs):
        if epoch == remove_after:
            packed.remove(8)
            del alone[8]
        got = packed.run_epoch()
        assert set(got) == set(alone)
        pairs += [(got[key], trainer.run_epoch()) for key, trainer in alone.items()]
    return packed, alone, pairs


@pytest.mark.parametrize("family", [MLP, CNN, RESMLP], ids=["mlp", "cnn1d", "plugin"])
def test_each_members_curve_is_its_curve_alone(digits, family):
    model = model_config(family)
    packed, alone, pairs = curves_side_by_side(digits, model, members(), epochs=3)
    assert packed.by_layer == (family is not RESMLP)  # built-in layers run without vmap
    for mine, theirs in pairs:
        assert mine.epoch == theirs.epoch and mine.lr == pytest.approx(theirs.lr)
        assert mine.train_loss == pytest.approx(theirs.train_loss, abs=1e-5)
        assert mine.val_loss == pytest.approx(theirs.val_loss, abs=1e-5)
        assert mine.val_accuracy == pytest.approx(theirs.val_accuracy, abs=1e-6)
    for key, trainer in alone.items():  # and the weights, BatchNorm statistics included
        expected = trainer.network.state_dict()
        got = packed.state_dict(key)
        assert set(got) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(got[name].to(value.dtype), value, atol=1e-5, rtol=1e-4)


def test_a_removed_member_leaves_the_others_on_their_own_curves(digits):
    model = model_config(MLP)
    packed, _, pairs = curves_side_by_side(digits, model, members(), epochs=4, remove_after=2)
    assert packed.keys == [7, 9]
    for mine, theirs in pairs:
        assert mine.val_loss == pytest.approx(theirs.val_loss, abs=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_adaptive_optimisers_follow_their_lone_runs(digits, optimizer):
    # Their steps divide by running gradient magnitudes, which magnifies float rounding over
    # many steps: the curves agree closely, not to the last digit.
    model = model_config(CNN)
    _, _, pairs = curves_side_by_side(digits, model, members(optimizer), epochs=2)
    for mine, theirs in pairs:
        assert mine.val_loss == pytest.approx(theirs.val_loss, abs=2e-2)
        assert mine.val_accuracy == pytest.approx(theirs.val_accuracy, abs=2e-2)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_the_packed_step_moves_each_member_as_its_own_torch_optimiser(name):
    # One step updates every member's slice of every parameter at once, each with its own
    # hyperparameters, while members leave and join as in a searched stage; a member's
    # slices move as `torch.optim` moves that member's own weights.
    configs = [TrainConfig(optimizer=name, lr=0.01 * (i + 1), momentum=(0.0, 0.9, 0.5, 0.7)[i],
                           beta1=0.8 + 0.05 * i, beta2=0.99 - 0.02 * i, eps=10.0 ** -(6 + i),
                           weight_decay=(0.0, 1e-3, 1e-4, 1e-2)[i]) for i in range(4)]  # fmt: skip
    torch.manual_seed(0)
    packed = [torch.randn(3, 5, 4, requires_grad=True), torch.randn(3, 5, requires_grad=True)]
    optimizer = PackedOptimizer(packed, configs[:3])
    alone = [own_optimiser(name, [p[i] for p in packed], configs[i]) for i in range(3)]
    for step in range(7):
        if step == 2:  # the second member leaves
            packed = [p.detach()[[0, 2]].requires_grad_() for p in packed]
            optimizer.keep(torch.tensor([0, 2]), packed)
            del alone[1]
        if step == 4:  # a fourth joins, from its own first step
            weights = [torch.randn(p.shape[1:]) for p in packed]
            packed = [torch.cat([p.detach(), w[None]]).requires_grad_()
                      for p, w in zip(packed, weights, strict=True)]  # fmt: skip
            optimizer.add(configs[3], packed)
            alone.append(own_optimiser(name, weights, configs[3]))
        before = [p.detach().clone() for p in packed]
        optimizer.step()  # no gradients yet: nothing moves, no step is counted
        assert all(torch.equal(p, b) for p, b in zip(packed, before, strict=True))
        optimizer.lr = torch.tensor([o.defaults["lr"] / (1 + step) for _, o in alone])
        for p in packed:
            p.grad = torch.randn_like(p)
        optimizer.step()
        for row, (weights, reference) in enumerate(alone):
            reference.param_groups[0]["lr"] = reference.defaults["lr"] / (1 + step)
            for mine, theirs in zip(packed, weights, strict=True):
                theirs.grad = mine.grad[row].clone()
            reference.step()
            for mine, theirs in zip(packed, weights, strict=True):
                torch.testing.assert_close(mine[row], theirs, rtol=1e-5, atol=1e-6)
        optimizer.zero_grad()


def own_optimiser(name, weights, config):
    """A member's weights, copied, and their own `torch.optim` optimiser."""
    weights = [w.detach().clone().requires_grad_() for w in weights]
    return weights, TORCH_CLASSES[name](weights, config)


def test_networks_whose_layers_the_layouts_cannot_run_go_under_vmap():
    signal = nn.Unflatten(1, (1, 16))
    assert runs_by_layer(nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU()))
    assert runs_by_layer(nn.Sequential(signal, nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(56, 3)))
    # A Linear over a signal's length would pair the batch's rows with members' weights.
    assert not runs_by_layer(nn.Sequential(signal, nn.Linear(16, 8), nn.Flatten(), nn.Linear(8, 3)))
    assert not runs_by_layer(nn.Sequential(nn.Linear(16, 8), nn.Conv1d(1, 4, 3)))  # no channels
    assert not runs_by_layer(nn.Sequential(nn.Linear(16, 8), nn.Flatten()))


def test_a_diverging_member_does_not_touch_the_others(digits):
    model = model_config(MLP)
    trains = members()
    trains[8] = trains[8].model_copy(update={"lr": 1e6})  # explodes at once
    packed = PackedTrainer(digits, model, trains, threads=1)
    alone = Trainer(digits, model, trains[7], threads=1)
    got = packed.run_epoch()
    assert got[8].diverged and not got[7].diverged
    assert got[7].val_loss == pytest.approx(alone.run_epoch().val_loss, abs=1e-5)


def test_what_cannot_pack_says_why():
    trains = list(members().values())
    assert packable(model_config(MLP), trains) is None
    assert "dropout" in packable(model_config({**CNN, "dropout": 0.1}), trains)
    mixed = [trains[0], trains[1].model_copy(update={"batch_size": 32})]
    assert "batch_size" in packable(model_config(MLP), mixed)
    with pytest.raises(ValueError, match="optimizer"):
        PackedTrainer(None, model_config(MLP), {1: trains[0], 2: members("adam")[8]})


def test_jobs_of_one_shape_pack_and_the_rest_train_alone():
    mlp, wide = model_config(MLP), model_config({**MLP, "hidden_units": 48})
    same = [TrialJob(k, mlp, t) for k, t in members().items()]
    other_batch = TrialJob(20, mlp, members()[7].model_copy(update={"batch_size": 32}))
    packs, alone = group([*same, TrialJob(21, wide, members()[7]), other_batch], 16, slots=2)
    assert [[j.key for j in p] for p in packs] == [[7, 8, 9]]
    assert sorted(j.key for j in alone) == [20, 21]
    many = [TrialJob(k, mlp, members()[7]) for k in range(40)]
    packs, alone = group(many, 16, slots=2)
    assert [len(p) for p in packs] == [14, 14, 12] and not alone  # none over 16, spread
    packs, _ = group(many[:6], 16, slots=2)
    assert [len(p) for p in packs] == [3, 3]  # both workers get a pack


def test_run_to_completion_packs_and_gives_each_job_its_own_result(digits):
    model = model_config(MLP)
    trains = members()
    trains[8] = trains[8].model_copy(update={"lr": 1e6})  # diverges
    jobs = [TrialJob(k, model, t.model_copy(update={"epochs": 2})) for k, t in trains.items()]
    jobs.append(TrialJob(30, model_config({**MLP, "hidden_units": 16}), jobs[0].train))
    packed = run_to_completion(InProcessExecutor(digits), jobs, keep_weights=True, pack=8)
    alone = run_to_completion(InProcessExecutor(digits), jobs, keep_weights=True)
    assert packed[8] == alone[8] == "diverged"
    for key in (7, 9, 30):
        assert [m.epoch for m in packed[key].curve] == [1, 2]
        assert packed[key].curve[-1].val_loss == pytest.approx(
            alone[key].curve[-1].val_loss, abs=1e-5
        )
        assert set(packed[key].weights) == set(alone[key].weights)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_member_that_joins_later_follows_its_lone_curve(digits, optimizer):
    # A searched stage refills a pack as its members are pruned: the newcomer starts from its
    # own first epoch (weights, data order, lr schedule, Adam's step count) beside the others.
    model = model_config(MLP)
    trains = members(optimizer)
    late = trains.pop(9)
    packed = PackedTrainer(digits, model, trains, threads=1)
    alone = {key: Trainer(digits, model, train, threads=1) for key, train in trains.items()}
    packed.run_epoch()
    for trainer in alone.values():
        trainer.run_epoch()
    packed.add(9, late)
    alone[9] = Trainer(digits, model, late, threads=1)
    tolerance = 1e-5 if optimizer == "sgd" else 2e-2
    for _ in range(2):
        got = packed.run_epoch()
        for key, trainer in alone.items():
            theirs = trainer.run_epoch()
            assert got[key].epoch == theirs.epoch and got[key].lr == pytest.approx(theirs.lr)
            assert got[key].val_loss == pytest.approx(theirs.val_loss, abs=tolerance)
    assert packed.epochs == [3, 3, 2]
