"""The MLflow journal never jams: refused writes are set aside, a crash's torn line or counter
does not stop the next start, and `caviar sync` sends every spool to its own experiment."""

from __future__ import annotations

import json

from mlflow import MlflowClient
from typer.testing import CliRunner

from caviar.sweeps.record.journal import read_dead_letters
from caviar.sweeps.record.writer import MlflowWriter
from caviar.sweeps.views.cli import app
from tests.conftest import spec_dict, write_spec


def test_a_write_the_server_refuses_is_set_aside_and_the_rest_goes_on(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "spool" / "tiny"
    writer = MlflowWriter(uri, "tiny", spool)
    writer.create_run("k", "k", {})
    writer.log_batch("k", params={"lr": "0.1"})
    writer.log_batch("k", params={"lr": "0.2"})  # MLflow: changing a param is not allowed
    writer.set_status("k", "FINISHED")
    assert writer.pending == 0, "the refused write does not block the ones after it"
    (letter,) = read_dead_letters(spool)
    assert letter["op"]["params"] == {"lr": "0.2"} and "lr" in letter["reason"]
    assert writer.refused() and not writer.refused(), "each refusal is reported once"
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}


def test_a_refused_write_left_in_the_journal_does_not_stop_the_next_start(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "spool"
    spool.mkdir()
    ops = [
        {"op": "log_batch", "key": "never-created", "metrics": [], "params": {"a": "1"},
         "tags": {}},
        {"op": "create_run", "key": "k", "name": "k", "tags": {}, "parent": None},
        {"op": "status", "key": "k", "status": "FINISHED"},
    ]  # fmt: skip
    (spool / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    writer = MlflowWriter(uri, "jam", spool, background=True)
    assert writer.close() == 0
    assert "no MLflow run with caviar.key=never-created" in read_dead_letters(spool)[0]["reason"]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("jam").experiment_id])
    assert run.info.status == "FINISHED"


def test_a_torn_last_line_and_an_empty_counter_do_not_stop_the_next_start(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "spool"
    spool.mkdir()
    whole = {"op": "create_run", "key": "k", "name": "k", "tags": {}, "parent": None}
    (spool / "ops.jsonl").write_text(json.dumps(whole) + "\n" + '{"op": "log_batch", "ke')
    (spool / "applied").write_text("")  # the crash hit while the counter was being written
    writer = MlflowWriter(uri, "torn", spool)
    assert writer.pending == 1
    assert writer.sync() == 0
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("torn").experiment_id])) == 1


def test_sync_sends_every_spool_to_its_own_experiment_and_lists_refusals(tmp_path):
    run_dir = tmp_path / "runs"
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    run_dir.mkdir()
    down = "http://127.0.0.1:9"  # nothing listens: the writes wait in the spools
    for sweep in ("tiny", "tiny.retune-abc", "other"):
        writer = MlflowWriter(down, f"experiment-of-{sweep}", run_dir / "spool" / sweep)
        writer.create_run(f"{sweep}-run", sweep, {})
    spec = write_spec(tmp_path, spec_dict())
    result = CliRunner().invoke(app, ["sync", str(spec), "--run-dir", str(run_dir),
                                      "--tracking-uri", uri])  # fmt: skip
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    for sweep in ("tiny", "tiny.retune-abc"):  # the spec's sweep and its re-tune
        experiment = client.get_experiment_by_name(f"experiment-of-{sweep}")
        assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == 1
    assert client.get_experiment_by_name("experiment-of-other") is None, "not this spec's"
    everything = CliRunner().invoke(app, ["sync", "--run-dir", str(run_dir), "--tracking-uri", uri])
    assert everything.exit_code == 0 and "other: sent 1 writes" in everything.output
    assert client.get_experiment_by_name("experiment-of-other") is not None


def test_a_writer_that_keeps_up_names_its_target_once_and_leaves_nothing_waiting(tmp_path):
    """Caught up after every epoch, the journal starts again at the next write; its target
    file is not rewritten (and fsynced) each time, and a spool with no journal still reads as
    having nothing waiting. A later writer with another target names its own."""
    from caviar.sweeps.record.journal import spooled_target, waiting

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "spool" / "tiny"
    writer = MlflowWriter(uri, "tiny", spool)
    writer.create_run("k", "k", {})
    target = (spool / "target.json").stat()
    for step in range(5):
        writer.log_batch("k", metrics=[("loss", 1.0 / (step + 1), 0, step)])
        assert writer.pending == 0 and waiting(spool) == 0 and spooled_target(spool) is None
    again = (spool / "target.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (target.st_ino, target.st_mtime_ns)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    (spool / "ops.jsonl").write_text("")  # a write waits, as when a server is down
    MlflowWriter(other, "elsewhere", spool).journal.append({"op": "experiment_tags", "key": "",
                                                            "tags": {}})  # fmt: skip
    assert spooled_target(spool) == {"tracking_uri": other, "experiment": "elsewhere"}
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")][-1] == 0.2
