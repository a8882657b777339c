"""MLflow writes applied by an `MlflowHost` (the process the local cluster keeps MLflow loaded
in): the writer's journal and order stay; refusals and outages are told back."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from caviar.sweeps.record.hosted import HostedOperations, MlflowHost
from caviar.sweeps.record.operations import KEY_TAG
from caviar.sweeps.record.writer import MlflowWriter


def reach(host: MlflowHost) -> Any:
    """Calls to `host` in this process (on the cluster, `caviar.cluster.hosted.Hosted` carries
    the same calls to its actor)."""
    return lambda method, *args: getattr(host, method)(*args)


def hosted_writer(host: MlflowHost, uri: str, experiment: str, spool: Path) -> MlflowWriter:
    target = (uri, experiment, None)
    return MlflowWriter(
        uri, experiment, spool, operations=lambda: HostedOperations(reach(host), _fail, target)
    )


def _fail() -> None:
    raise AssertionError("the host was asked to restart")


def test_writes_through_a_host_land_in_mlflow_and_a_refused_one_is_set_aside(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = hosted_writer(MlflowHost(), uri, "hosted", tmp_path / "spool")
    writer.create_run("run-a", "a", {"role": "test"}, fresh=True)
    writer.log_batch("run-a", metrics=[("loss", 0.5, 1, 1), ("loss", 0.25, 2, 2)],
                     params={"lr": "0.1"})  # fmt: skip
    writer.log_batch("no-such-run", metrics=[("loss", 1.0, 1, 1)])
    writer.set_status("run-a", "FINISHED")

    assert writer.pending == 0
    refused = writer.refused()
    assert len(refused) == 1 and "no-such-run" in refused[0] and "LookupError" in refused[0]
    dead = (tmp_path / "spool" / "dead-letter.jsonl").read_text().splitlines()
    assert [json.loads(line)["op"]["key"] for line in dead] == ["no-such-run"]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hosted").experiment_id])
    assert run.data.tags[KEY_TAG] == "run-a" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5, 0.25]


def test_a_host_whose_store_file_was_replaced_asks_for_a_fresh_process(tmp_path):
    store = tmp_path / "mlflow.db"
    target = (f"sqlite:///{store}", "replaced", None)
    host = MlflowHost()
    assert host.open(target)
    create = {"op": "create_run", "key": "k", "name": "k", "tags": {}, "parent": None}
    assert host.apply("writer-1", target, create) is None
    assert host.open(target), "the file it wrote to is still there"
    for path in tmp_path.glob("mlflow.db*"):
        path.unlink()  # a user clears the store while the cluster stays up
    assert not host.open(target)

    def restart() -> None:
        raise Restarted

    operations = HostedOperations(reach(host), restart, target)
    with pytest.raises(Restarted):  # before its first write goes to the old file
        operations.apply({**create, "key": "k2", "name": "k2"})


class Restarted(Exception):
    """The host was asked to start afresh."""


def test_writes_wait_in_the_journal_while_the_host_cannot_reach_the_server(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe closes
    writer = hosted_writer(MlflowHost(), f"http://127.0.0.1:{port}", "away", tmp_path / "spool")
    writer.create_run("run-a", "a", {})
    writer.log_batch("run-a", metrics=[("loss", 1.0, 1, 1)])
    assert writer.pending == 2 and writer.refused() == []
    waiting = (tmp_path / "spool" / "ops.jsonl").read_text().splitlines()
    assert [json.loads(line)["op"] for line in waiting] == ["create_run", "log_batch"]
