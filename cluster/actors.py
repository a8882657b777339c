"""Where an executor's worker actors come from, and where they go when it closes.

`FreshActors`: started for this executor and stopped with it (an embedded Ray, or a cluster
given by address). `WarmActors`: on the persistent local cluster (`caviar cluster up`), named
workers that outlive the sweep, already past their imports (torch takes seconds), leased to
one executor at a time and handed back warm when it closes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import ray

from caviar.cluster.runtime import TrialResources

WARM_PREFIX = "caviar-worker-"
LEASE_SECONDS = 120.0  # a killed driver's workers are free after this (at once on its host)
RENEW_EVERY = 10.0
CAVIAR_PACKAGES = ("caviar", "caviar.models", "caviar.sweeps", "caviar.cluster")


class FreshActors:
    def __init__(self, actor_class: Any, resources: TrialResources) -> None:
        self._class = actor_class.options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=0
        )
        self.threads = resources.threads

    def take(self, count: int) -> list[Any]:
        return [self._class.remote(self.threads) for _ in range(count)]

    def discard(self, actor: Any) -> None:
        ray.kill(actor)

    def renew(self) -> None:
        pass

    def close(self, actors: Iterable[Any]) -> None:
        for actor in actors:
            ray.kill(actor)


class WarmActors:
    """Named, detached workers for CPU trials on the local cluster.

    A worker's name carries a fingerprint of what it imported and from where (caviar's code,
    the plugins' code, the working directory, `sys.path`, its threads), so a changed checkout
    or another project gets workers of its own; `close` stops stale ones nobody holds. The
    workers reserve no Ray CPUs (they would block other shapes while idle): the executor's
    slots, fitted to the cluster's CPUs, bound how many train at once."""

    def __init__(self, actor_class: Any, resources: TrialResources) -> None:
        self._class = actor_class
        self.threads = resources.threads
        self.prefix = f"{WARM_PREFIX}{fingerprint(self.threads)}-"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: list[Any] = []
        self._index = 0
        self._renewed = time.monotonic()

    def take(self, count: int) -> list[Any]:
        """`count` workers leased to this executor: free warm ones first, new ones next."""
        taken: list[Any] = []
        while len(taken) < count:
            names = [f"{self.prefix}{self._index + i}" for i in range(count - len(taken))]
            self._index += len(names)
            handles = [self._named(name) for name in names]
            claims = ray.get([h.claim.remote(self.owner, LEASE_SECONDS) for h in handles])
            taken += [h for h, ok in zip(handles, claims, strict=True) if ok]
        self._held += taken
        return taken

    def discard(self, actor: Any) -> None:
        if actor in self._held:
            self._held.remove(actor)
        ray.kill(actor)

    def renew(self) -> None:
        if time.monotonic() - self._renewed >= RENEW_EVERY:
            self._renewed = time.monotonic()
            for actor in self._held:
                actor.claim.remote(self.owner, LEASE_SECONDS)

    def close(self, actors: Iterable[Any]) -> None:
        """Hand the workers back warm, and stop stale ones (another fingerprint) not in use."""
        for actor in actors:
            actor.release.remote(self.owner)
        self._held.clear()
        stale = [n for n in ray.util.list_named_actors() if n.startswith(WARM_PREFIX)]
        for name in stale:
            if not name.startswith(self.prefix):
                self._stop_if_free(name)

    def _named(self, name: str) -> Any:
        options = dict(name=name, lifetime="detached", get_if_exists=True, num_cpus=0)
        return self._class.options(**options, max_restarts=0).remote(self.threads)

    def _stop_if_free(self, name: str) -> None:
        try:
            actor = ray.get_actor(name)
            if ray.get(actor.claim.remote(self.owner, LEASE_SECONDS), timeout=5):
                ray.kill(actor)
        except (ValueError, ray.exceptions.RayError):
            pass  # gone already, or busy: left alone


def fingerprint(threads: int) -> str:
    """What a warm worker's imports depend on, hashed: code (by file times), places, threads."""
    parts = {
        "cwd": os.getcwd(),
        "path": sys.path,
        "threads": threads,
        "code": [_newest_file(p) for p in (*CAVIAR_PACKAGES, *_plugin_packages())],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _plugin_packages() -> list[str]:
    found = entry_points(group="caviar.models") + entry_points(group="caviar.data")
    return sorted({point.module.split(".")[0] for point in found})


def _newest_file(package: str) -> float:
    """The newest modification time among `package`'s Python files (0 if not found)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return 0.0
    if spec is None:
        return 0.0
    folders = list(spec.submodule_search_locations or [])
    files = [Path(spec.origin)] if spec.origin and not folders else []
    for folder in folders:
        files += Path(folder).rglob("*.py")
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
