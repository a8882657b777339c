"""A tracking server that answers 503 for longer than the sweep, then 400 to one request:
no trial fails, nothing is lost or duplicated once `caviar sync` has run, and the refused
request is set aside in the dead-letter record instead of jamming the ones behind it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from mlflow import MlflowClient
from optuna.trial import TrialState

from caviar.sweeps.record.journal import read_dead_letters
from tests.chaos.support import Command, study
from tests.conftest import free_port, spec_dict, write_spec

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


class Gate:
    """What the proxy answers: 503 to all (`down`), or the server's own answers, except a
    400 to every batch that carries the sweep's `train.epochs` param (`reject_params`), as
    MLflow answers a param whose value changed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.down = True
        self.reject_params = False
        self.rejected = 0


def proxy(gate: Gate) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if gate.down:
                return self._answer(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}')
            if gate.reject_params and self.path.endswith("/runs/log-batch"):
                params = json.loads(body or b"{}").get("params", [])
                if any(p["key"] == "train.epochs" for p in params):
                    gate.rejected += 1
                    return self._answer(400, b'{"error_code": "INVALID_PARAMETER_VALUE"}')
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.request(self.command, gate.upstream + self.path, data=body,
                                      headers=headers, timeout=60)  # fmt: skip
            self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type"))

        def _answer(self, status: int, body: bytes, kind: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind or "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_server_answering_503_then_400_loses_and_duplicates_nothing(tmp_path, mlflow_server):
    gate = Gate(mlflow_server.url)
    server = proxy(gate)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    spec = write_spec(tmp_path, spec_dict(name="outage", stages=[{"name": "search", "trials": 6}]))
    run_dir = tmp_path / "runs"
    try:
        sweep = Command(tmp_path, "sweep", spec, "--run-dir", run_dir, "--tracking-uri", url)
        assert sweep.wait(timeout=300) == 0, sweep.output()  # 503 from start to end
        assert "unreachable" in sweep.output()
        trials = study(run_dir, "outage", "search").trials
        assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
        assert all(t.state is not TrialState.FAIL for t in trials), "no trial fails for MLflow"

        gate.down, gate.reject_params = False, True
        sync = Command(tmp_path, "sync", spec, "--run-dir", run_dir, log="sync.log")
        sync.wait(timeout=300)
        assert gate.rejected >= 1
        assert "refused by MLflow" in sync.output() and "400" in sync.output(), sync.output()
    finally:
        server.shutdown()
    (letter,) = read_dead_letters(run_dir / "spool" / "outage")
    assert "400" in letter["reason"]

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("outage")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("caviar.role") == "trial"]
    assert len(children) == 6, "one run per trial, none duplicated by the retries"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_number = {int(r.data.tags["trial"]): r for r in children}
    for trial in trials:
        curve = client.get_metric_history(by_number[trial.number].info.run_id, "val_accuracy")
        assert {m.step: m.value for m in curve} == trial.intermediate_values, "no metric lost"
