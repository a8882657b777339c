"""MLflow writes against a real tracking server that goes away and comes back."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from typer.testing import CliRunner

from caviar.models.data import build_dataset
from caviar.models.executor import EpochDone
from caviar.models.inprocess import InProcessExecutor
from caviar.models.sources import DigitsSource
from caviar.sweeps.record.operations import KEY_TAG
from caviar.sweeps.record.writer import MlflowWriter
from caviar.sweeps.views.cli import app
from tests.conftest import run_local_sweep


@pytest.mark.slow
def test_writes_wait_on_disk_while_the_server_is_down_and_arrive_in_order(tmp_path, mlflow_server):
    spool = tmp_path / "spool"
    writer = MlflowWriter(mlflow_server.url, "outage", spool, retry_seconds=0.5)
    writer.create_run("run-a", "a", {"role": "test"})
    writer.log_batch("run-a", metrics=[("loss", 1.0, 1, 1)])
    assert writer.pending == 0

    mlflow_server.stop()
    start = time.monotonic()
    for step in range(2, 6):
        writer.log_batch("run-a", metrics=[("loss", 1.0 / step, step, step)])
    writer.create_run("run-b", "b", {"role": "test"}, parent="run-a")
    writer.set_status("run-b", "FINISHED")
    assert time.monotonic() - start < 15, "an outage must not stall the sweep"
    assert writer.pending == 6
    waiting = [json.loads(line) for line in (spool / "ops.jsonl").read_text().splitlines()]
    assert [op["op"] for op in waiting] == ["log_batch"] * 4 + ["create_run", "status"]

    mlflow_server.start()
    assert writer.sync() == 0 and not (spool / "ops.jsonl").exists()
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("outage").experiment_id
    runs = {r.data.tags[KEY_TAG]: r for r in client.search_runs([experiment])}
    assert set(runs) == {"run-a", "run-b"}
    history = client.get_metric_history(runs["run-a"].info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    assert runs["run-b"].data.tags["mlflow.parentRunId"] == runs["run-a"].info.run_id
    assert runs["run-b"].info.status == "FINISHED"


@pytest.mark.slow
def test_a_replayed_create_does_not_duplicate_the_run(tmp_path, mlflow_server):
    # The first create reached the server but, as if its response was lost, stays in the outbox.
    MlflowWriter(mlflow_server.url, "dupes", tmp_path / "first").create_run("k", "k", {})
    spool = tmp_path / "spool"
    spool.mkdir()
    op = {"op": "create_run", "key": "k", "name": "k", "tags": {}, "parent": None}
    (spool / "ops.jsonl").write_text(json.dumps(op) + "\n")
    assert MlflowWriter(mlflow_server.url, "dupes", spool).sync() == 0
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("dupes").experiment_id
    assert len(client.search_runs([experiment])) == 1


class StopsServerAfter(InProcessExecutor):
    """Takes the tracking server down after some epochs, as an outage would."""

    def __init__(self, data, epochs, server):
        super().__init__(data)
        self.left, self.server = epochs, server

    def wait(self, timeout):
        events = super().wait(timeout)
        self.left -= sum(isinstance(e, EpochDone) for e in events)
        if self.left == 0:
            self.server.stop()
        return events


@pytest.mark.chaos
@pytest.mark.slow
def test_a_sweep_survives_a_server_outage_and_caviar_sync_loses_nothing(tmp_path, mlflow_server):
    data = build_dataset(DigitsSource(source="digits"))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    stages = {"stages": [{"name": "search", "trials": 6}]}
    sweep = run_local_sweep(
        sweep_dir,
        stages,
        executor=StopsServerAfter(data, 6, mlflow_server),
        tracking_uri=mlflow_server.url,
    )
    trials = sweep.study("search").trials
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    assert any("unreachable" in note for note in sweep.progress.notes)
    assert (sweep_dir / "spool" / "tiny" / "ops.jsonl").exists()

    mlflow_server.start()
    result = CliRunner().invoke(
        app, ["sync", str(sweep_dir / "spec.yaml"), "--run-dir", str(sweep_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "sent" in result.output
    children = sweep.runs("tags.`caviar.role` = 'trial'")
    assert len(children) == 6
    by_number = {int(r.data.tags["trial"]): r for r in children}
    for trial in trials:
        run = by_number[trial.number]
        curve = sweep.client.get_metric_history(run.info.run_id, "val_accuracy")
        assert {m.step: m.value for m in curve} == trial.intermediate_values, "no metric lost"
        expected = "complete" if trial.state is TrialState.COMPLETE else "pruned"
        assert run.data.tags["state"] == expected
    assert sweep.parent().info.status == "FINISHED"
    version = sweep.client.get_model_version_by_alias("tiny", "champion")
    assert version.tags["trial"] == sweep.best.label, "the champion waited and was registered"


def test_sync_reports_a_server_still_down(tmp_path):
    spool = tmp_path / "runs" / "spool" / "tiny"
    writer = MlflowWriter("http://127.0.0.1:9", "tiny", spool)  # nothing listens on port 9
    writer.create_run("k", "k", {})
    assert writer.pending == 1
    from tests.conftest import write_spec

    spec = write_spec(tmp_path)
    result = CliRunner().invoke(app, ["sync", str(spec), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "still unreachable" in result.output


def test_a_journal_left_by_a_killed_driver_is_replayed_at_the_next_start(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The killed driver's first writes had landed; none of them was marked applied.
    MlflowWriter(uri, "replay", tmp_path / "landed").create_run("k", "k", {})
    spool = tmp_path / "spool"
    spool.mkdir()
    ops = [
        {"op": "create_run", "key": "k", "name": "k", "tags": {}, "parent": None, "fresh": True},
        {
            "op": "log_batch",
            "key": "k",
            "metrics": [["loss", 0.5, 10, 1]],
            "params": {},
            "tags": {},
        },
        # uploaded and cleaned up just before the driver died, but not yet marked applied:
        {"op": "artifacts", "key": "k", "dir": str(spool / "files" / "gone"), "path": None},
        {
            "op": "log_batch",
            "key": "k",
            "metrics": [["loss", 0.25, 20, 2]],
            "params": {},
            "tags": {},
        },
        {"op": "status", "key": "k", "status": "FINISHED"},
    ]
    (spool / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))

    writer = MlflowWriter(uri, "replay", spool, background=True)
    assert writer.close() == 0
    assert not (spool / "ops.jsonl").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("replay").experiment_id])  # one
    assert run.data.tags[KEY_TAG] == "k" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]


def test_a_backlog_of_epoch_metrics_goes_out_in_one_request_per_run(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    requests: list[str] = []
    log_batch = MlflowClient.log_batch

    def counted(self, run_id, *args, **kwargs):  # the real call, counted
        requests.append(run_id)
        return log_batch(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    writer = MlflowWriter(uri, "backlog", tmp_path / "spool", background=True)
    writer.create_run("a", "a", {})
    writer.create_run("b", "b", {})
    assert writer.drain() == 0
    with writer.applier.lock:  # the writer falls behind: 2 x 30 epochs wait, interleaved
        for step in range(30):
            for key in ("a", "b"):
                writer.log_batch(key, [("loss", 1 / (step + 1), 1000 + step, step)], {"p": "1"})
        writer.set_status("a", "FINISHED")
        writer.log_batch("b", [("loss", 0.0, 2000, 30)])
    assert writer.close() == 0
    assert len(requests) <= 3, "one request per run for the backlog, then b's last epoch"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("backlog").experiment_id])
    steps = {
        r.data.tags[KEY_TAG]: [m.step for m in client.get_metric_history(r.info.run_id, "loss")]
        for r in runs
    }
    assert steps == {"a": list(range(30)), "b": list(range(31))}
    assert {r.data.tags[KEY_TAG]: r.info.status for r in runs}["a"] == "FINISHED"


@pytest.mark.chaos
def test_a_refused_write_in_a_backlog_is_set_aside_alone(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = MlflowWriter(uri, "refusal", tmp_path / "spool", background=True)
    writer.create_run("a", "a", {})
    assert writer.drain() == 0
    with writer.applier.lock:
        writer.log_batch("a", [("loss", 1.0, 1000, 0)], {"width": "32"})
        writer.log_batch("a", [("loss", 0.5, 1001, 1)], {"width": "64"})  # MLflow refuses this
        writer.log_batch("a", [("loss", 0.2, 1002, 2)])
    assert writer.close() == 0
    assert len(writer.refused()) == 1
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("refusal").experiment_id])
    assert run.data.params == {"width": "32"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 2]


def test_a_held_writer_applies_nothing_until_released_then_everything_in_order(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = MlflowWriter(uri, "held", tmp_path / "spool", background=True, hold_seconds=600)
    writer.create_run("a", "a", {})
    writer.log_batch("a", [("loss", 1.0, 1000, 0)])
    time.sleep(0.3)
    assert writer.pending == 2 and not (tmp_path / "mlflow.db").exists()
    writer.release()
    assert writer.drain(timeout=60) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("held").experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0]
    assert writer.close() == 0


def test_a_held_writer_is_drained_at_close_and_its_hold_ends_by_itself(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    held = MlflowWriter(uri, "closed", tmp_path / "spool", background=True, hold_seconds=600)
    held.create_run("a", "a", {})
    assert held.close() == 0, "a sweep that ends before its first epoch loses no write"
    brief = MlflowWriter(uri, "brief", tmp_path / "spool2", background=True, hold_seconds=0.2)
    brief.create_run("b", "b", {})
    deadline = time.monotonic() + 60
    while brief.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert brief.pending == 0, "applied once the hold ran out, with no release or drain"
    client = MlflowClient(uri)
    assert {e.name for e in client.search_experiments()} >= {"closed", "brief"}
    assert brief.close() == 0


def test_preloading_mlflow_writes_nothing(tmp_path):
    """A sweep's MLflow child imports MLflow as it starts, before any write reaches it: no
    store may appear then, for a local store or a server that is not even up."""
    from caviar.sweeps.record.writer import preload

    store = tmp_path / "mlflow.db"
    preload(f"sqlite:///{store}")
    preload("http://127.0.0.1:9")  # nothing listens there: no request may be made
    assert not store.exists()
    assert list(tmp_path.iterdir()) == []
