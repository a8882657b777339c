"""Connect to a Ray cluster, or start an embedded one for this process."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from models.errors import CaviarError


@dataclass(frozen=True)
class TrialResources:
    """What each trial reserves from Ray. Fractional GPUs let several trials share one card."""

    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def threads(self) -> int:
        """Torch threads for a trial: the CPUs it was given, at least one."""
        return max(1, int(self.cpus))


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Use the Ray instance this process already has, join `address`, or start a local one.

    A local instance started here is shut down on exit; a cluster we joined is left running.
    """
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False if address is None else None,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CaviarError(f"--ray-address {address}: cannot connect to Ray: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def concurrent_slots(wanted: int, resources: TrialResources) -> int:
    """How many trials the cluster can run at once, at most `wanted`; errors if not even one."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if resources.cpus > cpus:
        raise CaviarError(
            f"parallel.cpus_per_trial is {resources.cpus} but the Ray cluster has {cpus:g} CPUs"
        )
    if resources.gpus > gpus:
        raise CaviarError(
            f"parallel.gpus_per_trial is {resources.gpus} but the Ray cluster has {gpus:g} GPUs"
        )
    fit = math.floor(cpus / resources.cpus)
    if resources.gpus > 0:
        fit = min(fit, math.floor(gpus / resources.gpus))
    return max(1, min(wanted, fit))
