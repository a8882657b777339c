"""What a command started dies with it, even when the command is killed with SIGKILL.

Ray ties its head processes (GCS, raylet) to the driver, but the agents the raylet starts
(dashboard agent, runtime-env agent; ~200 MB) notice the raylet's death only when their own
calls to the dead GCS time out, a minute later. The reaper is a small process of its own that
watches the driver: it notes the driver's descendants every second, and when the driver is
gone (its pipe closes, however it ended) it kills those still alive. `caviar ui` uses it for
the `mlflow server` it runs (and that server's uvicorn workers). Linux only (it reads /proc);
elsewhere nothing is started.

Run as `python -m caviar.cluster.reaper`: it imports nothing of caviar, Ray or torch.
`holder_gone` tells the sweep's lease and the warm workers' leases when their holder was a
process on this machine that is gone.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

PROC = Path("/proc")
EVERY_SECONDS = 1.0


def start_reaper(only_ray: bool = True) -> subprocess.Popen[bytes] | None:
    """Start the reaper for this process (for the descendants that belong to Ray, or all of
    them); None where there is no /proc. Keep the handle: its pipe is how the reaper knows
    this process is alive."""
    if not (PROC / "self" / "stat").exists():
        return None
    scope = "ray" if only_ray else "all"
    return subprocess.Popen(
        [sys.executable, "-m", "caviar.cluster.reaper", str(os.getpid()), scope],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_reaper(reaper: subprocess.Popen[bytes] | None) -> None:
    """The driver is done (Ray shut down cleanly): the reaper kills any straggler and exits."""
    if reaper is not None and reaper.stdin is not None:
        reaper.stdin.close()
        reaper.wait(timeout=10)


def holder_gone(holder: str | None) -> bool:
    """Whether `holder` ("host:pid:nonce", how caviar names whoever holds a lease) was a
    process on this machine that no longer exists; a holder elsewhere is never known gone."""
    host, pid, *_ = [*(holder or "").split(":"), "", ""]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        found[int(entry.name)] = (int(fields[1]), fields[19])
    return found


def descendants(root: int, only_ray: bool = False) -> dict[int, str]:
    """pid -> start time of `root`'s descendants (the start time tells a reused pid apart);
    with `only_ray`, those that belong to Ray (a notebook's other children are not ours)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if not only_ray or _is_ray(pid):
            found[pid] = table[pid][1]
        todo += children.get(pid, [])
    return found


def _is_ray(pid: int) -> bool:
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return command.startswith(b"ray::") or b"/ray/" in command


def kill_all(processes: dict[int, str], signum: int = signal.SIGKILL) -> None:
    """Send `signum` to those of `processes` (pid -> start time) still alive."""
    alive = _processes()
    for pid, started in processes.items():
        if pid != os.getpid() and pid in alive and alive[pid][1] == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def kill_children_running(script: str) -> list[int]:
    """SIGKILL this process's children whose command line runs a file whose path ends with
    `script`; the pids killed."""
    me, ending, killed = os.getpid(), script.encode(), []
    for pid, (parent, _) in _processes().items():
        if parent != me:
            continue
        try:
            arguments = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argument.endswith(ending) for argument in arguments):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def watch(driver: int, only_ray: bool) -> None:
    """Until stdin closes: note `driver`'s descendants. Then kill those still alive."""
    known: dict[int, str] = {}
    while not select.select([sys.stdin], [], [], EVERY_SECONDS)[0]:
        known.update(descendants(driver, only_ray))
    if sys.stdin.read(1):  # data, not the end of the pipe: not ours to interpret
        return
    alive = _processes()
    for pid, started in list(known.items()):  # and what those started since the last look
        if pid in alive and alive[pid][1] == started:
            known.update(descendants(pid, only_ray))
    kill_all(known)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    watch(int(sys.argv[1]), only_ray=sys.argv[2:] != ["all"])
