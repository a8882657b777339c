"""An object built in a child process of this one, called over pipes.

What a sweep's driver hands to a helper so that the helper's Python work does not take the
interpreter lock from the driver's loop: the MLflow writes of a sweep that runs without the
local cluster (on the cluster, `hosted.Hosted` keeps them in a process that stays warm). The
child starts with the same interpreter, environment, import path and working directory (a
relative store path means the same file), builds its object while the caller goes on, and
ends when the caller closes it or is gone (its ends of the pipes close). It ignores Ctrl-C
and SIGTERM sent to the whole process group: the driver stops on them the way it chooses,
draining its writes through the child first.

`ChildProcess(build, concurrency)(method, *args)` calls `build()`'s `method`; `concurrency`
calls run at once (one pipe each, served by threads of the child). A child that has died
raises `ConnectionError`, and the next call starts a fresh one. `niceness` lowers the child's
CPU priority (`os.nice`); with `start=False` the child starts at `start()` or the first call.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

EXIT_WAIT = 30.0  # seconds a closed child gets to exit before it is killed


class ChildProcess:
    def __init__(
        self, build: Callable[[], Any], concurrency: int = 1, niceness: int = 0, start: bool = True
    ) -> None:
        self._build = build
        self._concurrency = concurrency
        self._niceness = niceness
        self._lock = threading.Lock()
        self._closed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._free: queue.Queue[Connection] = queue.Queue()
        if start:
            self._start()

    def start(self) -> None:
        """Start the child now, if it is not running (otherwise the next call starts it)."""
        with self._lock:
            if self._process is None and not self._closed:
                self._start()

    def __call__(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise ConnectionError(f"the child process for {self._build!r} was closed")
            if self._process is None:
                self._start()
            process, free = self._process, self._free
        connection = free.get()
        try:
            connection.send((method, args))
            kind, value = connection.recv()
        except (EOFError, OSError) as exc:
            self._lost(process)
            raise ConnectionError(f"the child process for {self._build!r} stopped: {exc}") from None
        finally:  # a broken pipe too: whoever waits for one then fails at once, not forever
            free.put(connection)
        if kind == "raised":
            raise RuntimeError(value)
        return value

    def restart(self) -> None:
        """Stop the child; the next call starts a fresh one."""
        self._stop()

    def close(self) -> None:
        """Stop the child for good: later calls raise `ConnectionError`."""
        with self._lock:
            self._closed = True
        self._stop()

    def _stop(self) -> None:
        """Close the pipes once the calls under way have been answered; the child then exits
        on its own. This does not wait for that: unloading MLflow takes a child 0.7 s."""
        with self._lock:
            process, free = self._process, self._free
            self._process = None
        if process is None:
            return
        for _ in range(self._concurrency):
            free.get().close()
        threading.Thread(target=_reap, args=(process,), name="child-reaper", daemon=True).start()

    def _start(self) -> None:
        pairs = [socket.socketpair() for _ in range(self._concurrency)]
        ends = [child.fileno() for _, child in pairs]
        serve_call = f"serve({ends}, {self._niceness})"
        command = [sys.executable, "-c", f"from {__name__} import serve; {serve_call}"]
        # The child imports what this process can: its `sys.path`, whichever way it was made.
        path = os.pathsep.join(entry for entry in sys.path if entry)
        self._process = subprocess.Popen(
            command, pass_fds=ends, env={**os.environ, "PYTHONPATH": path}
        )
        self._free = queue.Queue()
        for mine, child in pairs:
            child.close()
            self._free.put(Connection(mine.detach()))
        first = self._free.get()
        first.send_bytes(pickle.dumps(self._build))
        self._free.put(first)

    def _lost(self, process: subprocess.Popen[bytes] | None) -> None:
        """`process` stopped answering: kill what is left of it; the next call starts another."""
        with self._lock:
            if self._process is process:
                self._process = None
        if process is not None:
            process.kill()
            process.wait()


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Collect a closed child's exit; kill one that does not exit."""
    try:
        process.wait(timeout=EXIT_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(descriptors: list[int], niceness: int = 0) -> None:
    """The child: build the object the first pipe names, then answer calls on every pipe."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    connections = [Connection(descriptor) for descriptor in descriptors]
    built = pickle.loads(connections[0].recv_bytes())()
    threads = [threading.Thread(target=_answer, args=(built, c)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every call has been answered and the caller has closed the pipes: nothing is left to
    # do. Unloading what was built (MLflow, torch) would keep the process about a second more,
    # and with it the terminal or pipe it shares with the caller.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _answer(built: Any, connection: Connection) -> None:
    while True:
        try:
            method, args = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("returned", getattr(built, method)(*args))
        except Exception as exc:  # told to the caller, which raises it there
            answer = ("raised", f"{type(exc).__name__}: {exc}")
        connection.send(answer)
