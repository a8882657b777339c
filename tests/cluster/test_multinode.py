"""A sweep on a multi-node Ray cluster, logging to a tracking server backed by PostgreSQL,
with its Optuna studies in PostgreSQL too; a worker node is lost mid-sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from caviar.sweeps.search.studies import (
    FAIL_REASON,
    INTERRUPTED,
    load_study,
    open_storage,
    study_name,
)
from caviar.sweeps.views.cli import app
from tests.conftest import CAVIAR, MlflowServer, free_port, spec_dict, write_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.chaos]

# Enough trials that both workers are still busy when the status poll (a second or two
# per look) sees the first one finish: the node is removed from under a running trial.
TRIALS = 10
SPEC = spec_dict(
    name="multinode",
    model={"hidden_units": 256, "layers": 3},
    train={"epochs": 12, "batch_size": 16},
    stages=[{"name": "search", "trials": TRIALS}],
    parallel={"trials": 2, "cpus_per_trial": 1, "max_retries": 2},
)


# What the cluster holds, and has free, once the sweep is over (a separate driver).
RESOURCES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.time() + 30
while True:
    total, free = ray.cluster_resources().get("CPU", 0), ray.available_resources().get("CPU", 0)
    if free == total or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({"total": total, "free": free}))
"""


def cpus(address: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", RESOURCES, address], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    ray_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [ray_cluster.add_node(num_cpus=1) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    yield ray_cluster, workers
    ray_cluster.shutdown()


def test_sweep_on_a_cluster_survives_losing_a_node(tmp_path, postgres, cluster):
    ray_cluster, workers = cluster
    server = MlflowServer(tmp_path / "mlflow", free_port(), store=postgres.url("mlflow"))
    server.run_dir.mkdir()
    server.start()
    run_dir = tmp_path / "runs"
    spec = write_spec(tmp_path, SPEC)
    storage_url = postgres.url("optuna")
    where = ["--run-dir", str(run_dir), "--storage", storage_url]
    driver = subprocess.Popen(
        [CAVIAR, "sweep", str(spec), *where, "--ray-address", ray_cluster.address,
         "--tracking-uri", server.url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = CliRunner().invoke(app, ["status", str(spec), "--json", *where])
            counts = json.loads(status.stdout)["trials"] if status.exit_code == 0 else {}
            finished = counts.get("complete", 0) + counts.get("pruned", 0)
            if finished >= 1 and counts.get("running"):
                break
            time.sleep(1)
        else:
            pytest.fail("the sweep never got going")
        assert finished <= TRIALS - 3, f"too late to lose a node under a running trial: {counts}"
        ray_cluster.remove_node(workers[0], allow_graceful=False)  # a machine goes away
        ray_cluster.add_node(num_cpus=1)  # and the autoscaler replaces it
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
        server.stop()
        server.start()  # to read what was logged

    try:
        assert driver.returncode == 0, output
        assert "worker lost" in output, output
        assert cpus(ray_cluster.address) == {"total": 2, "free": 2}, "its resources free again"
        study = load_study(open_storage(storage_url), study_name("multinode", "search"))
        assert study is not None
        counted = [t for t in study.trials if t.user_attrs.get(FAIL_REASON) != INTERRUPTED]
        assert len(counted) == TRIALS and all(t.state.is_finished() for t in study.trials)

        client = MlflowClient(server.url)
        experiment = client.get_experiment_by_name("multinode").experiment_id
        runs = client.search_runs([experiment], max_results=100)
        trials = {
            int(r.data.tags["trial"]): r for r in runs if r.data.tags.get("caviar.role") == "trial"
        }
        assert len(trials) == len(study.trials)
        for trial in counted:
            curve = client.get_metric_history(trials[trial.number].info.run_id, "val_accuracy")
            assert {m.step: m.value for m in curve} == trial.intermediate_values
        champion = client.search_model_versions("name = 'multinode'")
        assert champion, f"no champion registered; the driver said:\n{output}"
        assert champion[0].run_id in {r.info.run_id for r in trials.values()}
    finally:
        server.stop()
