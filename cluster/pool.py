"""Ray and its trial workers in one step: what sweeps, re-tests and re-tunes all use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from caviar.cluster.executor import RayExecutor
from caviar.cluster.local import LocalCluster
from caviar.cluster.runtime import TrialResources, concurrent_slots, ray_session


@contextmanager
def ray_workers(
    resources: TrialResources,
    wanted: int,
    max_retries: int,
    address: str | None = None,
    on_fewer_slots: Callable[[int], None] | None = None,
    local: LocalCluster | None = None,
    epoch_timeout: float | None = None,
) -> Iterator[RayExecutor]:
    """Start or join Ray (`ray_session`), fit up to `wanted` trials at once to the cluster, and
    hand out the executor, its workers starting; `load` it with the data before the first
    trial. On exit its actors stop (and an embedded Ray shuts down).

    `on_fewer_slots(slots)` hears when the cluster holds fewer trials at once than wanted.
    Without `address`, the persistent `local` cluster is joined and its warm workers used.
    `epoch_timeout`: see `caviar.cluster.watchdog`."""
    with ray_session(address, local):
        slots = concurrent_slots(wanted, resources)
        if slots < wanted and on_fewer_slots is not None:
            on_fewer_slots(slots)
        warm = address is None and local is not None
        executor = RayExecutor(
            None, resources, slots, max_retries, warm=warm, epoch_timeout=epoch_timeout
        )
        try:
            yield executor
        finally:
            executor.close()
