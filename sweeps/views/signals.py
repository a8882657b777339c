"""SIGTERM (how Kubernetes, `ray job stop`, systemd and `kill` end a process) is handled like
Ctrl-C: it raises `Terminated`, a `KeyboardInterrupt`, so every clean-up Ctrl-C runs (live
trials marked interrupted, MLflow runs closed, Ray shut down) runs for it too, and the
command exits with 143 (128 + SIGTERM), as a process ended by the signal would."""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


_received = threading.Event()


def terminated(interrupt: BaseException) -> bool:
    """Whether `interrupt` came from SIGTERM. Ray turns an exception raised by a signal
    handler during its calls into a plain `KeyboardInterrupt`, so the signal is remembered."""
    return isinstance(interrupt, Terminated) or _received.is_set()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _received.set()
    raise Terminated()


def stop_on_sigterm() -> None:
    """From now on, SIGTERM raises `Terminated` in the main thread (a no-op elsewhere: Python
    delivers signals to the main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
