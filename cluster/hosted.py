"""Objects kept warm in the local cluster between sweeps, each in a process of its own.

What is slow to start and needed by every sweep (MLflow, say: 1.5 s of imports) is built once,
by a named, detached actor of the local cluster (`caviar cluster up`), and called by the
sweeps that join it. The actor reserves no CPUs. Its name carries the fingerprint of the code
it was built from (`actors.fingerprint`), so a changed checkout gets one of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from caviar.cluster.actors import fingerprint

HOSTED_PREFIX = "caviar-hosted-"


class _Host:
    """The actor: holds `build()` and runs its methods."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._object = build()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._object, method)(*args)


class Hosted:
    """Calls to the object `build()` in the local cluster's actor for `kind`, started now
    (it builds while the caller goes on) unless it is up already. `concurrency`: calls it
    runs at once, in threads. Calls raise `ConnectionError` when the actor is gone; the next
    call starts a new one."""

    def __init__(self, kind: str, build: Callable[[], Any], concurrency: int = 1) -> None:
        self.name = f"{HOSTED_PREFIX}{kind}-{fingerprint(0)}"
        self._build = build
        self._concurrency = concurrency
        self._actor: Any = None
        self._start()

    def __call__(self, method: str, *args: Any) -> Any:
        actor = self._actor if self._actor is not None else self._start()
        try:
            return ray.get(actor.call.remote(method, *args))
        except ray.exceptions.RayActorError as exc:
            self._actor = None
            raise ConnectionError(f"{self.name} stopped: {exc}") from None

    def restart(self) -> None:
        """Stop the actor (whoever uses it); the next call starts a fresh one."""
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)
            self._actor = None

    def _start(self) -> Any:
        options = dict(name=self.name, lifetime="detached", get_if_exists=True, num_cpus=0,
                       max_concurrency=self._concurrency, max_restarts=0)  # fmt: skip
        self._actor = ray.remote(_Host).options(**options).remote(self._build)
        return self._actor
