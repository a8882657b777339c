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
from mlflow import MlflowClient
from ray._common.utils import get_ray_address_file

from caviar.cluster.local import running
from tests.conftest import spec_dict, write_spec

CAVIAR = Path(sys.executable).parent / "caviar"

# Lists the cluster's named actors whose names start with argv[2] (name -> process id), as a
# separate driver.
LIST_ACTORS = """
import json, os, sys, ray
ray.init(address=sys.argv[1], namespace="caviar", logging_level="ERROR")
names = [n for n in ray.util.list_named_actors() if n.startswith(sys.argv[2])]
pid = lambda name: ray.get(ray.get_actor(name).__ray_call__.remote(lambda _: os.getpid()))
print(json.dumps({n: pid(n) for n in names}))
"""


def run(
    *args: object, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def sweep_on(
    tmp_path: Path, run_dir: Path, name: str, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`caviar sweep` of a tiny spec called `name`, and the modules its process imported."""
    spec = write_spec(tmp_path, spec_dict(name=name), f"{name}.yaml")
    done = run(sys.executable, "-X", "importtime", CAVIAR, "sweep", spec, "--run-dir", run_dir,
               cwd=cwd)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done, {line.split("|")[-1].strip() for line in lines}


def named_actors(record: dict[str, str], prefix: str) -> dict[str, int]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": record["token_path"]}
    done = run(sys.executable, "-c", LIST_ACTORS, record["address"], prefix, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_workers(record: dict[str, str]) -> dict[str, int]:
    return named_actors(record, "caviar-worker-")


def assert_recorded(run_dir: Path, experiment: str) -> None:
    """Every trial of the tiny spec in the run's MLflow with its epochs, and the sweep's run
    with its files."""
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    trials = client.search_runs([found.experiment_id], "tags.`caviar.role` = 'trial'")
    epochs = [len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in trials]
    assert len(epochs) == 8 and all(1 <= n <= 4 for n in epochs), (experiment, epochs)
    (sweep,) = client.search_runs([found.experiment_id], "tags.`caviar.role` = 'sweep'")
    files = {f.path for f in client.list_artifacts(sweep.info.run_id)}
    assert "spec.yaml" in files, (experiment, files)
    champion = client.get_model_version_by_alias(experiment, "champion")
    assert 0 < float(champion.tags["test_accuracy"]) <= 1


def assert_stopped(record: dict[str, str], pids: list[int]) -> None:
    """The cluster, its workers and hosts are gone, and nothing points at it any more."""
    assert not alive(record["pid"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids), "its workers and MLflow host stop with it"
    host, port = record["address"].split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "nothing listens any more"
    # A plain `ray.init()` elsewhere (a user's own Ray script) starts its own Ray instead of
    # trying, for minutes, to join the stopped cluster.
    current = Path(get_ray_address_file(None))
    assert not current.exists() or not current.read_text().strip().endswith(f":{port}")


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

        # Run from the project's folder, naming the run directory relative to it: the
        # cluster's processes work in the folder the cluster was started from.
        first, imported = sweep_on(tmp_path, Path("runs"), "warm-a", cwd=tmp_path)
        assert f"joining the local Ray cluster at {record['address']}" in first.stdout
        assert not [m for m in imported if m.split(".")[0] == "mlflow"], "MLflow loaded here"
        workers = warm_workers(record)
        assert len(workers) == 2, workers
        mlflow_hosts = named_actors(record, "caviar-hosted-mlflow-")
        assert len(mlflow_hosts) == 1, mlflow_hosts
        builders = named_actors(record, "caviar-hosted-champion-")
        assert len(builders) == 1, builders

        sweep_on(tmp_path, Path("runs"), "warm-b", cwd=tmp_path)
        assert warm_workers(record) == workers, "the second sweep trained on the same processes"
        assert named_actors(record, "caviar-hosted-mlflow-") == mlflow_hosts, (
            "the second sweep's MLflow writes went to the process that has MLflow loaded"
        )
        assert named_actors(record, "caviar-hosted-champion-") == builders, (
            "the second sweep's champion was built by the process readied for it"
        )
        assert_recorded(run_dir, "warm-a")
        assert_recorded(run_dir, "warm-b")
    finally:
        stopped = run(CAVIAR, "cluster", "down", "--run-dir", run_dir)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert_stopped(record, [*workers.values(), *mlflow_hosts.values(), *builders.values()])
    assert run(CAVIAR, "cluster", "status", "--run-dir", run_dir).returncode == 1
