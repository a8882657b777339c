"""Ray Tune: a function trainable reporting each epoch, OptunaSearch (TPE) and the ASHA
scheduler, one CPU per trial, two at a time, as Ray Tune's documentation shows.
`python -m bench.peers.run_tune OUT.json STORAGE_DIR`."""

import sys
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from bench.peers import workload as w
from bench.peers.plain_torch import epochs


def trainable(config: dict[str, Any], data: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    for started, ended, accuracy in epochs(config, data, w.EPOCHS):
        tune.report({"val_accuracy": accuracy, "started": started, "ended": ended})


def main(out: Path, storage: Path) -> None:
    data = w.mnist1d_splits()
    space = {
        "lr": tune.loguniform(*w.LR),
        "one_minus_momentum": tune.loguniform(*w.ONE_MINUS_MOMENTUM),
        "hidden_units": tune.lograndint(w.HIDDEN_UNITS[0], w.HIDDEN_UNITS[1] + 1),
        "layers": tune.randint(w.LAYERS[0], w.LAYERS[1] + 1),
        "batch_size": tune.choice(w.BATCH_SIZES),
        "weight_decay": tune.loguniform(*w.WEIGHT_DECAY),
    }
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=data), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            search_alg=OptunaSearch(seed=w.SEED),
            scheduler=ASHAScheduler(
                max_t=w.EPOCHS, grace_period=w.MIN_EPOCHS, reduction_factor=w.REDUCTION
            ),
            num_samples=w.TRIALS,
            max_concurrent_trials=w.SLOTS,
        ),
        run_config=tune.RunConfig(storage_path=str(storage.resolve()), verbose=0),
    )
    results = tuner.fit()
    measured = w.Measured("Ray Tune + OptunaSearch + ASHA")
    for result in results:
        frame = result.metrics_dataframe
        if frame is None:
            continue
        for started, ended in zip(frame["started"], frame["ended"], strict=True):
            measured.epoch(float(started), float(ended))
    best = results.get_best_result()
    measured.best_val = float(best.metrics["val_accuracy"])
    measured.best_config = dict(best.config)
    measured.trials = len(results)
    measured.save(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
