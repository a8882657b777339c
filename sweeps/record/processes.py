"""Where a sweep's record work runs, besides its driver: MLflow's writes (an `MlflowHost`)
and the champion's model folder (a `ChampionBuilder`), each in a process of its own.

On the local cluster (`caviar cluster up`) both are named actors the cluster keeps loaded
between sweeps (`caviar.cluster.hosted`); otherwise each is a child of the sweep's process
(`caviar.cluster.child_process`). Both start once the sweep's first epoch is in: until then
the sweep's writes wait in its journal (`MlflowWriter`'s hold). Their imports and readying
(about 3 s of CPU for MLflow's, 5 s for the builder) would otherwise take the two cores of
this machine from Ray's start and the workers' imports: with MLflow's child started before
Ray, the first trial came 0.3-1 s later (peers workload, cold, interleaved runs).
MLflow's writes go to the cluster's host only for the run directory's own store: a tracking
server may want credentials the cluster's processes were not started with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from caviar.cluster.child_process import ChildProcess
from caviar.cluster.hosted import Hosted
from caviar.sweeps.record.champion_export import ChampionBuilder
from caviar.sweeps.record.hosted import Host, MlflowHost, loaded_host

MLFLOW_CONCURRENCY = 4  # MLflow writes applied at once (the writer's batches per run)
# The champion's builder readies itself (about 5 s of CPU) once the trials run, not while Ray
# and the workers start (it would delay the first trial), at the trial workers' priority
# (Ray's default niceness for them): a third of two cores while two trials train.
BUILDER_NICENESS = 15
# How long a sweep's first MLflow writes wait for the first epoch at most: a sweep whose first
# epoch is slow (large data, a busy cluster) still shows up in MLflow soon.
HOLD_SECONDS = 30.0


@dataclass(frozen=True)
class Hosts:
    """The processes a sweep's driver hands record work to."""

    mlflow: Host
    builder: Host


@contextmanager
def sweep_hosts(
    tracking: str, tracking_server: bool, on_cluster: bool
) -> Iterator[Callable[[], Hosts]]:
    """The children that are wanted (those not on the cluster), each started by its first
    call or `start()`. The block gets `hosts()`, which gives them with the cluster's
    actors for the rest once Ray is up. The children are closed when the block ends (the
    writer has drained by then)."""
    mlflow = None if on_cluster and not tracking_server else mlflow_child(tracking)
    builder = None if on_cluster else builder_child()

    def hosts() -> Hosts:
        return Hosts(
            mlflow or Hosted("mlflow", MlflowHost, concurrency=MLFLOW_CONCURRENCY),
            builder or Hosted("champion", ChampionBuilder),
        )

    try:
        yield hosts
    finally:
        for child in (mlflow, builder):
            if child is not None:
                child.close()


def builder_child() -> ChildProcess:
    """A child process that builds champions: it starts, and readies itself, at `start()`
    (the driver's, once the first epoch is in) or at its first call."""
    return ChildProcess(ChampionBuilder, niceness=BUILDER_NICENESS, start=False)


def mlflow_child(tracking: str) -> ChildProcess:
    """A child process that applies MLflow writes to `tracking`; it starts, and imports
    MLflow, at its first call."""
    return ChildProcess(partial(loaded_host, tracking), concurrency=MLFLOW_CONCURRENCY, start=False)
