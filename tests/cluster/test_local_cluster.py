"""`caviar cluster up`: a persistent local Ray cluster that sweeps join, its workers warm."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray._common.utils import get_ray_address_file

from caviar.cluster.local import running
from tests.conftest import spec_dict, write_spec

CAVIAR = Path(sys.executable).parent / "caviar"

# Lists the warm workers (name -> process id) of the cluster, as a separate driver.
LIST_WORKERS = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace="caviar", logging_level="ERROR")
names = [n for n in ray.util.list_named_actors() if n.startswith("caviar-worker-")]
print(json.dumps({n: ray.get(ray.get_actor(n).pid.remote()) for n in names}))
"""


def run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env
    )


def warm_workers(record: dict[str, str]) -> dict[str, int]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": record["token_path"]}
    done = run(sys.executable, "-c", LIST_WORKERS, record["address"], env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def alive(pid: int) -> bool:
    return running(pid)  # a zombie left to a PID 1 that does not reap counts as gone


@pytest.mark.slow
def test_sweeps_join_the_local_cluster_and_reuse_its_warm_workers(tmp_path):
    run_dir = tmp_path / "runs"
    started = run(CAVIAR, "cluster", "up", "--run-dir", run_dir, "--cpus", 2)
    assert started.returncode == 0, started.stdout + started.stderr
    record = json.loads((run_dir / "cluster" / "cluster.json").read_text())
    try:
        assert record["address"].startswith("127.0.0.1:")
        assert run(CAVIAR, "cluster", "status", "--run-dir", run_dir).returncode == 0
        again = run(CAVIAR, "cluster", "up", "--run-dir", run_dir)
        assert again.returncode == 0 and "already up" in again.stdout

        first = run(CAVIAR, "sweep", write_spec(tmp_path, spec_dict(name="warm-a"), "a.yaml"),
                    "--run-dir", run_dir)  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"joining the local Ray cluster at {record['address']}" in first.stdout
        workers = warm_workers(record)
        assert len(workers) == 2, workers

        second = run(CAVIAR, "sweep", write_spec(tmp_path, spec_dict(name="warm-b"), "b.yaml"),
                     "--run-dir", run_dir)  # fmt: skip
        assert second.returncode == 0, second.stdout + second.stderr
        assert warm_workers(record) == workers, "the second sweep trained on the same processes"
    finally:
        stopped = run(CAVIAR, "cluster", "down", "--run-dir", run_dir)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not alive(record["pid"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in workers.values()):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers.values()), "its workers stop with it"
    host, port = record["address"].split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "nothing listens any more"
    assert run(CAVIAR, "cluster", "status", "--run-dir", run_dir).returncode == 1
    # A plain `ray.init()` elsewhere (a user's own Ray script) starts its own Ray instead of
    # trying, for minutes, to join the stopped cluster.
    current = Path(get_ray_address_file(None))
    assert not current.exists() or not current.read_text().strip().endswith(f":{port}")
