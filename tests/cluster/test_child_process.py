"""An object built in a child process of the driver (`caviar.cluster.child_process`)."""

from __future__ import annotations

import importlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from caviar.cluster.child_process import ChildProcess


def os_in_child(concurrency: int = 1) -> ChildProcess:
    """The child's own `os` module: its `getpid` says which process answered."""
    return ChildProcess(partial(importlib.import_module, "os"), concurrency)


def test_calls_are_answered_by_one_child_process_with_the_callers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative store path must name the same file there
    child = os_in_child()
    try:
        pid = child("getpid")
        assert pid != os.getpid()
        assert child("getpid") == pid, "the object is built once and kept"
        assert child("getcwd") == str(tmp_path)
    finally:
        child.close()


def test_the_child_imports_what_the_caller_can(tmp_path, monkeypatch):
    (tmp_path / "only_here.py").write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as a notebook's sys.path.insert would
    child = ChildProcess(partial(importlib.import_module, "only_here"))
    try:
        assert child("__getattribute__", "ANSWER") == 42
    finally:
        child.close()


def test_calls_from_several_threads_at_once_each_get_their_own_answer():
    child = os_in_child(concurrency=3)
    try:
        with ThreadPoolExecutor(6) as threads:
            answers = list(threads.map(lambda n: child("fspath", f"call-{n}"), range(60)))
        assert answers == [f"call-{n}" for n in range(60)]
    finally:
        child.close()


def test_an_error_in_the_child_is_raised_to_the_caller_with_its_kind_and_message(tmp_path):
    child = os_in_child()
    try:
        with pytest.raises(RuntimeError, match=r"FileNotFoundError: .*missing"):
            child("stat", str(tmp_path / "missing"))
        assert child("getpid") > 0, "the child goes on after an error"
    finally:
        child.close()


def test_a_child_that_died_is_a_connection_error_and_the_next_call_starts_a_fresh_one():
    child = os_in_child()
    try:
        first = child("getpid")
        with pytest.raises(ConnectionError):
            child("_exit", 1)
        assert child("getpid") not in (first, os.getpid())
    finally:
        child.close()


def test_ctrl_c_and_sigterm_do_not_stop_the_child_only_closing_it_does():
    child = os_in_child()
    pid = child("getpid")
    for stop in (signal.SIGINT, signal.SIGTERM):  # what a terminal or a job runner sends a group
        os.kill(pid, stop)
    assert child("getpid") == pid
    child.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # it exits on its own, and is reaped
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the closed child {pid} is still there")


def test_a_child_can_run_at_a_lower_cpu_priority():
    child = ChildProcess(partial(importlib.import_module, "os"), niceness=5)
    try:
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert child("getpriority", os.PRIO_PROCESS, 0) == min(mine + 5, 19)
        assert os.getpriority(os.PRIO_PROCESS, 0) == mine, "the caller keeps its own"
    finally:
        child.close()


def serving_children() -> set[int]:
    """This process's children that serve a `ChildProcess`."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"child_process import serve" in command:
            found.add(int(entry.name))
    return found


def test_a_child_made_not_to_start_starts_when_told_or_when_first_called():
    before = serving_children()
    told, called = (ChildProcess(partial(importlib.import_module, "os"), start=False) for _ in "ab")
    try:
        assert serving_children() == before, "no process until it is wanted"
        told.start()
        told.start()  # once
        assert len(serving_children() - before) == 1
        assert called("getpid") in serving_children() - before
        assert len(serving_children() - before) == 2
    finally:
        told.close()
        called.close()


def test_a_closed_child_is_not_started_again():
    child = os_in_child()
    child.close()
    with pytest.raises(ConnectionError, match="closed"):
        child("getpid")
