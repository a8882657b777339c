"""Which epochs a stage's pruner can stop a trial after, checked against Optuna's pruners."""

from __future__ import annotations

import random

import optuna
import pytest

from caviar.models.config import MlpConfig, TrainConfig
from caviar.models.executor import TrialJob
from caviar.sweeps.search.samplers import decision_epochs, make_pruner
from caviar.sweeps.search.spec import PrunerName, PrunerSpec

EPOCHS = 20


def pruned_at(pruner: PrunerSpec, trials: int = 60) -> set[int]:
    """The epochs after which Optuna's pruner stopped trials whose curves are random walks,
    each trial reporting every epoch as the driver does."""
    rng = random.Random(0)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner, EPOCHS))
    stopped = set()
    for _ in range(trials):
        trial, value = study.ask(), rng.random()
        for epoch in range(1, EPOCHS + 1):
            value += rng.gauss(0, 0.1)
            trial.report(value, epoch)
            if trial.should_prune():
                stopped.add(epoch)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    return stopped


@pytest.mark.parametrize(
    "pruner",
    [
        PrunerSpec(kind=PrunerName.SUCCESSIVE_HALVING, min_epochs=2, reduction_factor=3),
        PrunerSpec(kind=PrunerName.SUCCESSIVE_HALVING, min_epochs=1, reduction_factor=2),
        PrunerSpec(kind=PrunerName.MEDIAN, warmup_epochs=5, startup_trials=2),
    ],
)
def test_pruners_stop_trials_only_after_their_decision_epochs(pruner):
    decisions = decision_epochs(pruner, EPOCHS)
    assert decisions is not None
    stopped = pruned_at(pruner)
    assert stopped, "the random curves are pruned somewhere"
    assert stopped <= set(decisions), "workers train past other epochs without asking"


def test_decision_epochs_of_each_pruner():
    halving = PrunerSpec(kind=PrunerName.SUCCESSIVE_HALVING, min_epochs=2, reduction_factor=3)
    assert decision_epochs(halving, EPOCHS) == (2, 6, 18)
    assert decision_epochs(PrunerSpec(kind=PrunerName.NONE), EPOCHS) == ()
    median = PrunerSpec(kind=PrunerName.MEDIAN, warmup_epochs=0)
    assert decision_epochs(median, 4) == (1, 2, 3)
    assert decision_epochs(PrunerSpec(kind=PrunerName.HYPERBAND), EPOCHS) is None


def test_a_job_names_the_next_epoch_the_driver_decides_on():
    train = TrainConfig(epochs=EPOCHS)
    every, halving = TrialJob(1, MlpConfig(), train), TrialJob(2, MlpConfig(), train, (2, 6, 18))
    assert [every.next_decision(e) for e in (0, 1, 19, 20)] == [1, 2, 20, 20]
    assert [halving.next_decision(e) for e in (0, 2, 5, 6, 18)] == [2, 6, 6, 18, 20]
    assert TrialJob(3, MlpConfig(), train, ()).next_decision(0) == EPOCHS
