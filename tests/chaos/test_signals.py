"""SIGTERM, as Kubernetes, `ray job stop`, systemd or `kill` send it, ends a command the way
Ctrl-C does: cleanly, with exit code 143, and nothing left running or listening."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import requests
from optuna.trial import TrialState

from caviar.sweeps.search.studies import FAIL_REASON, INTERRUPTED
from tests.chaos.support import SLOW, Command, mlflow_runs, study
from tests.conftest import free_port, write_spec

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def running_trials(run_dir):
    try:
        return [t for t in study(run_dir, "chaos", "search").trials if t.state.name == "RUNNING"]
    except (KeyError, FileNotFoundError, ValueError):
        return []


def test_sigterm_stops_a_sweep_cleanly(tmp_path):
    spec = write_spec(tmp_path, SLOW)
    run_dir = tmp_path / "runs"
    driver = Command(tmp_path, "sweep", spec, "--run-dir", run_dir)
    try:
        driver.until(lambda: len(running_trials(run_dir)) >= 1)
        time.sleep(1.0)  # mid-epoch
        sent = time.monotonic()
        os.kill(driver.pid, signal.SIGTERM)  # the driver alone, as `kill PID` does
        assert driver.wait(timeout=60) == 143, driver.output()
        took = time.monotonic() - sent
        assert took < 15, f"SIGTERM took {took:.1f} s to end the sweep"
        assert "terminated (SIGTERM)" in driver.output()
        assert "Traceback" not in driver.output()
        assert driver.left_running() == [], "Ray and the workers stop with the driver"
    finally:
        driver.kill()

    trials = study(run_dir, "chaos", "search").trials
    assert not [t for t in trials if t.state is TrialState.RUNNING]
    assert any(t.user_attrs.get(FAIL_REASON) == INTERRUPTED for t in trials)
    runs = mlflow_runs(run_dir, "chaos")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"], "every run closed"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def still_listening(port: int, grace: float = 5.0) -> bool:
    """Whether something still listens on `port` after up to `grace` seconds (on a loaded
    machine the server's last process can close its socket a moment after the session's)."""
    deadline = time.monotonic() + grace
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return listening(port)


def test_sigterm_stops_the_ui_and_its_server_tree(tmp_path):
    port = free_port()
    ui = Command(tmp_path, "ui", "--run-dir", tmp_path / "runs", "--port", port)
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
            except requests.RequestException:
                return False

        ui.until(up, timeout=120)
        os.kill(ui.pid, signal.SIGTERM)
        assert ui.wait(timeout=30) == 143, ui.output()
        assert ui.left_running() == [], "mlflow server and its uvicorn workers stop too"
        assert not still_listening(port)
    finally:
        ui.kill()


def test_a_ui_killed_outright_takes_its_server_with_it(tmp_path):
    port = free_port()
    ui = Command(tmp_path, "ui", "--run-dir", tmp_path / "runs", "--port", port)
    try:
        ui.until(lambda: listening(port), timeout=120)
        os.kill(ui.pid, signal.SIGKILL)  # no clean-up of its own can run
        ui.process.wait()
        assert ui.left_running(grace=5.0) == [], "the reaper stops the server tree"
        assert not still_listening(port)
    finally:
        ui.kill()
