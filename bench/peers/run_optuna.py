"""Plain Optuna: TPE and successive halving, an in-memory study, two trials at a time in
threads of one process (`study.optimize(..., n_jobs=2)`), as Optuna's documentation shows.
`python -m bench.peers.run_optuna OUT.json`."""

import sys
import threading
from pathlib import Path

import optuna
import torch

from bench.peers import workload as w
from bench.peers.plain_torch import epochs


def main(out: Path) -> None:
    torch.set_num_threads(1)  # one core per trial thread
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = w.mnist1d_splits()
    measured = w.Measured("plain Optuna (threads)")
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        config = {
            "lr": trial.suggest_float("lr", *w.LR, log=True),
            "one_minus_momentum": trial.suggest_float("one_minus_momentum",
                                                      *w.ONE_MINUS_MOMENTUM, log=True),
            "hidden_units": trial.suggest_int("hidden_units", *w.HIDDEN_UNITS, log=True),
            "layers": trial.suggest_int("layers", *w.LAYERS),
            "batch_size": trial.suggest_categorical("batch_size", w.BATCH_SIZES),
            "weight_decay": trial.suggest_float("weight_decay", *w.WEIGHT_DECAY, log=True),
        }  # fmt: skip
        accuracy = 0.0
        for epoch, (started, ended, accuracy) in enumerate(
            epochs(config, data, w.EPOCHS, seed=trial.number), start=1
        ):
            with lock:
                measured.epoch(started, ended)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=w.SEED),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=w.MIN_EPOCHS, reduction_factor=w.REDUCTION
        ),
    )
    study.optimize(objective, n_trials=w.TRIALS, n_jobs=w.SLOTS)
    measured.best_val = study.best_value
    measured.best_config = study.best_params
    measured.trials = len(study.trials)
    measured.save(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
