"""A persistent Ray cluster on this machine: `caviar cluster up` starts it, sweeps join it.

The head listens on 127.0.0.1 only, with token authentication; its token lives beside its
record in `<run dir>/cluster/` (readable by the user alone), so joining needs nothing from
`~/.ray`. The record, `cluster.json`, holds the address and the process id of the
`ray start --block` process that owns every Ray process of the cluster: stopping that process
stops them all.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from caviar.models.errors import CaviarError

STARTED_LINE = "Ray runtime started"


@dataclass(frozen=True)
class LocalCluster:
    address: str  # the head's GCS address, 127.0.0.1:PORT
    pid: int  # the `ray start --block` process
    cpus: int
    token_path: str
    started_at: str

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to join."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}

    def alive(self) -> bool:
        if not running(self.pid):
            return False
        host, port = self.address.rsplit(":", 1)
        with socket.socket() as probe:
            probe.settimeout(1.0)
            return probe.connect_ex((host, int(port))) == 0


def folder(run_dir: Path) -> Path:
    return run_dir / "cluster"


def find(run_dir: Path) -> LocalCluster | None:
    """The cluster `caviar cluster up` started for `run_dir`, if it is up."""
    try:
        cluster = LocalCluster(**json.loads((folder(run_dir) / "cluster.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return cluster if cluster.alive() else None


def start(run_dir: Path, cpus: int) -> tuple[LocalCluster, bool]:
    """Start the cluster (or find it up); returns it and whether it was started now."""
    running = find(run_dir)
    if running is not None:
        return running, False
    home = folder(run_dir)
    home.mkdir(parents=True, exist_ok=True)
    token = home / "auth_token"
    if not token.exists():
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token.resolve())}
    log = home / "ray.log"
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
               "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    cluster = LocalCluster(f"127.0.0.1:{port}", process.pid, cpus, str(token.resolve()), _now())
    _wait_started(process, log, cluster)
    (home / "cluster.json").write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    return cluster, True


def stop(run_dir: Path, grace: float = 20.0) -> LocalCluster | None:
    """Stop the cluster of `run_dir` and every process it started; None if none was up."""
    record = folder(run_dir) / "cluster.json"
    try:
        cluster = LocalCluster(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(cluster.pid, signal.SIGTERM)  # `ray start --block` stops its processes
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and running(cluster.pid):
            time.sleep(0.2)
        if running(cluster.pid):
            os.killpg(cluster.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _forget_current_cluster(cluster)
    record.unlink(missing_ok=True)
    return cluster


def _forget_current_cluster(cluster: LocalCluster) -> None:
    """`ray start` records the cluster as the machine's current one, which a plain
    `ray.init()` (a user's own Ray script) then tries to join; `ray stop` removes the record,
    a stopped `ray start --block` does not. Removed here when it names this cluster."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # another Ray version: the record stays, as after `ray start`
        return
    current = Path(get_ray_address_file(None))
    try:
        named = current.read_text().strip()
    except OSError:
        return
    if named.rsplit(":", 1)[-1] == cluster.address.rsplit(":", 1)[-1]:
        current.unlink(missing_ok=True)


def _wait_started(process: subprocess.Popen[bytes], log: Path, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text().strip().splitlines()[-5:])
            raise CaviarError(f"the local Ray cluster did not start (see {log}):\n{tail}")
        if STARTED_LINE in log.read_text() and cluster.alive():
            return
        time.sleep(0.2)
    process.terminate()
    raise CaviarError(f"the local Ray cluster did not start within 90 s (see {log})")


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child when started by this process
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:  # no /proc (macOS): signal 0 has to do
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
