"""Objects kept warm in the local cluster between sweeps, each in a process of its own.

What is slow to start and needed by every sweep (MLflow, say: 1.5 s of imports) is built once,
by a named, detached actor of the local cluster (`caviar cluster up`), and called by the
sweeps that join it. The actor reserves no CPUs. Its name carries the fingerprint of the code
it was built from (`actors.fingerprint`), so a changed checkout gets one of its own; the old
one is stopped once it has had no call, and none running, for `STALE_AFTER` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import ray

from caviar.cluster.actors import fingerprint

HOSTED_PREFIX = "caviar-hosted-"
STALE_AFTER = 600.0  # seconds without a call after which another checkout's host is stopped


class _Host:
    """The actor: holds `build()` and runs its methods."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._object = build()
        self._lock = threading.Lock()
        self._running = 0  # calls under way (the actor runs several at once, in threads)
        self._called = time.monotonic()

    def call(self, method: str, *args: Any) -> Any:
        self._count(+1)
        try:
            return getattr(self._object, method)(*args)
        finally:
            self._count(-1)

    def touch(self) -> None:
        """A new user attached: not idle."""
        self._count(0)

    def idle(self) -> float:
        """Seconds since the last call ended (0 while one runs)."""
        with self._lock:
            return 0.0 if self._running else time.monotonic() - self._called

    def _count(self, change: int) -> None:
        with self._lock:
            self._running += change
            self._called = time.monotonic()


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
        self._stop_stale(f"{HOSTED_PREFIX}{kind}-")

    def __call__(self, method: str, *args: Any) -> Any:
        actor = self._actor if self._actor is not None else self._start()
        try:
            return ray.get(actor.call.remote(method, *args))
        except ray.exceptions.RayActorError as exc:
            self._actor = None
            raise ConnectionError(f"{self.name} stopped: {exc}") from None

    def start(self) -> None:
        """Nothing to do: the actor was started (or found) when this was made."""

    def restart(self) -> None:
        """Stop the actor (whoever uses it); the next call starts a fresh one."""
        try:
            actor = self._actor if self._actor is not None else ray.get_actor(self.name)
            ray.kill(actor, no_restart=True)
        except ValueError:
            return  # none is up
        self._actor = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # `ray.kill` only asks; the name frees once it is gone
            try:
                ray.get_actor(self.name)
            except ValueError:
                return
            time.sleep(0.05)

    def _start(self) -> Any:
        options = dict(name=self.name, lifetime="detached", get_if_exists=True, num_cpus=0,
                       max_concurrency=self._concurrency, max_restarts=0)  # fmt: skip
        self._actor = ray.remote(_Host).options(**options).remote(self._build)
        self._actor.touch.remote()  # one found up may have been idle: it is in use again
        return self._actor

    def _stop_stale(self, prefix: str) -> None:
        """Stop the hosts of this kind built from other code that nobody calls any more."""
        for name in ray.util.list_named_actors():
            if not name.startswith(prefix) or name == self.name:
                continue
            try:
                actor = ray.get_actor(name)
                idle = cast(float, ray.get(actor.idle.remote(), timeout=5))
                if idle >= STALE_AFTER:
                    ray.kill(actor, no_restart=True)
            except (ValueError, ray.exceptions.RayError):
                pass  # gone already, or busy
