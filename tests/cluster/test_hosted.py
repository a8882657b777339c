"""Objects the local cluster keeps warm between sweeps (`caviar.cluster.hosted`)."""

from __future__ import annotations

import os
import time

import pytest
import ray

from caviar.cluster import hosted
from caviar.cluster.hosted import HOSTED_PREFIX, Hosted


class Counter:
    """Stands for a costly object: counts the calls it had, in its process."""

    def __init__(self) -> None:
        self.count = 0

    def bump(self) -> tuple[int, int]:
        self.count += 1
        return self.count, os.getpid()

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)


def names(prefix: str) -> list[str]:
    return [n for n in ray.util.list_named_actors() if n.startswith(prefix)]


def test_a_hosted_object_is_built_once_and_found_by_name(ray_instance):
    first = Hosted("counter", Counter)
    count, pid = first("bump")
    assert count == 1 and pid != os.getpid(), "built in a process of its own"
    assert Hosted("counter", Counter)("bump") == (2, pid), "a second user finds the same one"

    ray.kill(ray.get_actor(first.name), no_restart=True)  # the host dies under its user
    with pytest.raises(ConnectionError):
        for _ in range(50):  # the kill lands within moments
            first("bump")
            time.sleep(0.1)
    count, fresh = first("bump")
    assert count == 1 and fresh != pid, "the next call starts a new one"
    first.restart()
    assert first("bump")[0] == 1
    first.restart()


def test_another_checkouts_idle_host_is_stopped_and_a_busy_one_kept(ray_instance, monkeypatch):
    def old_host(name: str) -> object:
        options = dict(name=name, lifetime="detached", num_cpus=0, max_concurrency=2)
        actor = ray.remote(hosted._Host).options(**options).remote(Counter)
        ray.get(actor.call.remote("bump"))
        return actor

    idle, busy = f"{HOSTED_PREFIX}tally-old1", f"{HOSTED_PREFIX}tally-old2"
    old_host(idle)
    busy_actor = old_host(busy)
    monkeypatch.setattr(hosted, "STALE_AFTER", 2.0)
    time.sleep(2.5)  # both past it since their last call
    running = busy_actor.call.remote("wait", 20.0)  # a long call under way: in use
    time.sleep(0.5)
    current = Hosted("tally", Counter)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and idle in names(HOSTED_PREFIX):
        time.sleep(0.1)
    assert sorted(names(f"{HOSTED_PREFIX}tally-")) == sorted([busy, current.name])
    ray.kill(busy_actor, no_restart=True)
    del running
    current.restart()
