"""Scheduled runs as Ray jobs, through the job submission API, on a head with token auth."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from caviar.sweeps.ops.schedule import history
from tests.conftest import TWO_STAGES, free_port, spec_dict, write_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
BIN = Path(sys.executable).parent


@pytest.fixture
def token_cluster(tmp_path):
    """`ray start --head` with token authentication and a dashboard (the jobs API)."""
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",  # `caviar` for the jobs' entrypoints
    )
    dashboard = free_port()
    temp = Path(f"/tmp/ray-{secrets.token_hex(3)}")  # Ray's socket paths must stay short
    start = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
             f"--port={free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
             # Ports of its own: this test session already runs a Ray instance.
             f"--dashboard-agent-listen-port={free_port()}",
             f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}",
             f"--metrics-export-port={free_port()}"]  # fmt: skip
    # --block keeps `ray start` in the foreground: stopping its process group stops this
    # cluster alone (`ray stop` would stop every Ray on the machine, this session's too).
    head = subprocess.Popen(
        start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                    break
            time.sleep(1)
        else:
            pytest.fail("the Ray head's dashboard did not come up")
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def submit(spec: Path, run_dir: str, address: str, env: dict[str, str]) -> dict:
    """A scheduled run in a process of its own: Ray reads its auth mode once per process."""
    code = (
        "import json, sys; from caviar.sweeps.ops.schedule import run_job; "
        "run_job(*sys.argv[1:4], {})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(spec), run_dir, address],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_scheduled_retest_runs_as_a_ray_job_with_the_clusters_token(
    swept, tmp_path, token_cluster
):
    address, env = token_cluster
    shutil.copytree(swept.folder, tmp_path / "runs")
    spec = write_spec(tmp_path, spec_dict(stages=TWO_STAGES, retune={"seeds": 1}))
    run_dir = str(tmp_path / "runs")

    # Without the cluster's auth mode and token the submission is refused, and recorded so.
    without = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    refused = submit(spec, run_dir, address, {**without, "HOME": str(tmp_path)})
    assert refused["verdict"] is None and "authentication" in refused["error"].lower()

    entry = submit(spec, run_dir, address, env)
    assert "error" not in entry, entry
    assert entry["verdict"] == "fresh"
    assert [e.get("verdict") for e in history(Path(run_dir))] == [None, "fresh"]
