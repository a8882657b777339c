"""Connect to a Ray cluster, or start an embedded one for this process."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from caviar.cluster.embedded_start import quick_embedded_start
from caviar.cluster.local import LocalCluster
from caviar.cluster.reaper import kill_children_running, start_reaper, stop_reaper
from caviar.models.errors import CaviarError

WARM_NAMESPACE = "caviar"  # the local cluster's named, warm workers live here

# The autoscaler's process of an instance Ray starts here. `ray.shutdown` stops it with
# SIGTERM and waits out the second it grants before SIGKILL: it never exits in that second.
# An embedded instance has nothing for an autoscaler to do, so it is killed first:
# `ray.shutdown` then takes 0.35 s instead of 1.4 s (2 cores).
AUTOSCALER_MONITOR = "ray/autoscaler/_private/monitor.py"

AUTH_HINT = (
    "A cluster with token authentication needs RAY_AUTH_MODE=token and its token "
    "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) here too; one without it "
    "needs RAY_AUTH_MODE unset here"
)


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
def ray_session(address: str | None = None, local: LocalCluster | None = None) -> Iterator[None]:
    """Use the Ray instance this process already has, join `address`, join the persistent
    `local` cluster (`caviar cluster up`), or start an embedded one, in that order.

    An embedded instance is shut down on exit; a cluster we joined is left running.
    """
    if ray.is_initialized():
        yield
        return
    namespace = None
    if address is None and local is not None:
        _use_token(local.env())
        address, namespace = local.address, WARM_NAMESPACE
    elif address is None and not os.environ.get("RAY_ADDRESS"):
        # A new instance of our own, even where `ray start` left a cluster (or a stale record
        # of one) on this machine. Inside a Ray job, RAY_ADDRESS points at the job's cluster.
        address = "local"
        # Its token is made and used by this process alone; Ray's notice about it (which
        # suggests turning authentication off) says nothing useful to a caviar user.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    reaper = start_reaper() if address == "local" else None
    try:
        _init(address, namespace)
        try:
            yield
        finally:
            if address == "local":
                kill_children_running(AUTOSCALER_MONITOR)
            ray.shutdown()
    finally:
        stop_reaper(reaper)


def _init(address: str | None, namespace: str | None) -> None:
    """`ray.init`, its failures as `CaviarError`s. It replaces the process's SIGTERM handler
    with `sys.exit`; the one the process had (the CLI's: stop like Ctrl-C) is put back."""
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with quick_embedded_start():  # see there: two waits inside ray.init cut short
            ray.init(
                address=address,
                namespace=namespace,
                include_dashboard=False if address == "local" else None,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address == "local":
            raise CaviarError(f"cannot start a local Ray instance: {exc}") from None
        raise CaviarError(
            f"--ray-address {address}: cannot connect to Ray: {exc}. {AUTH_HINT}"
        ) from None
    finally:
        if threading.current_thread() is threading.main_thread() and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def _use_token(env: dict[str, str]) -> None:
    """Token authentication with the local cluster's token for this process (and what it
    starts). Ray reads its auth mode and token once, when imported; there is no public call
    to read them again, so the internal one is used where it exists."""
    os.environ.update(env)
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # another Ray version: the environment alone has to do
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


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
