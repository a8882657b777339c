"""caviar through its Python API: the workload as one spec, in RUN_DIR (on an embedded Ray
instance, or on the local cluster `caviar cluster up` started there, whose workers may be
warm). `python -m bench.peers.run_caviar OUT.json RUN_DIR SYSTEM [PACK]`."""

import gc
import sys
from pathlib import Path

import caviar
from bench.peers import workload as w


def main(out: Path, run_dir: Path, system: str, pack: int = 1) -> None:
    spec = w.caviar_spec(out.stem)  # a sweep of its own each time: nothing is resumed
    if pack > 1:  # trials packed on the workers, their shapes drawn once per pack
        spec["parallel"]["pack"] = pack
        for stage in spec["stages"]:
            stage["shape_per_pack"] = True
    outcome = caviar.sweep(spec, run_dir, quiet=True)
    usage = outcome.result.usage
    measured = w.Measured(system, usage.epochs, usage.compute, usage.first, usage.last)
    measured.best_val = outcome.result.best.value
    best = dict(outcome.result.best.params)
    best["one_minus_momentum"] = 1 - best.pop("momentum")  # the peers' form
    measured.best_config = best
    measured.trials = w.TRIALS
    measured.notes = {"mlflow_seconds": outcome.mlflow_seconds, "sweep_seconds": outcome.seconds}
    measured.save(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:5]))
    gc.freeze()  # as the `caviar` command does on its way out (`caviar.sweeps.views.cli.main`)
