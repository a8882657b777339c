"""`caviar schedule`: re-tests fire on schedule, never overlap, survive a restart, re-tune."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import threading
import time
from datetime import datetime

import pytest
from rich.console import Console

from caviar.sweeps.ops.cron import cron_trigger
from caviar.sweeps.ops.schedule import INFLIGHT, history, run_scheduler
from tests.chaos.support import Command
from tests.sweeps.ops.test_retest import copy_of, shifted_digits


def test_cron_weekdays_follow_crontab_not_apscheduler():
    monday_3am = cron_trigger("0 3 * * 1")
    sunday = datetime.fromisoformat("2026-11-29T12:00:00+00:00")
    assert monday_3am.get_next_fire_time(None, sunday).strftime("%a %H:%M") == "Mon 03:00"
    every_2s = cron_trigger("*/2 * * * * *")
    assert every_2s.get_next_fire_time(None, sunday).second == 0
    with pytest.raises(ValueError, match="expected 5 fields"):
        cron_trigger("0 3 * *")


class Scheduler:
    """`caviar schedule` on a thread of the test, stopped on request."""

    def __init__(self, spec, run_dir):
        self.stop = threading.Event()
        self.output = io.StringIO()
        self.thread = threading.Thread(
            target=run_scheduler,
            args=([spec], run_dir, None, Console(file=self.output), self.stop),
        )
        self.thread.start()

    def halt(self):
        self.stop.set()
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()


def wait_for_runs(run_dir, count, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = history(run_dir)
        if len(entries) >= count:
            return entries
        time.sleep(0.5)
    pytest.fail(f"only {len(history(run_dir))} scheduled runs after {timeout} s")


def assert_no_overlap(entries):
    spans = sorted((e["started"], e["finished"]) for e in entries)
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished, "two runs of one sweep overlapped"


@pytest.mark.chaos
@pytest.mark.slow
def test_retests_fire_on_schedule_never_overlap_and_survive_a_restart(swept, tmp_path):
    spec, run_dir = copy_of(swept, tmp_path, retune={"schedule": "*/2 * * * * *", "seeds": 1})
    first = Scheduler(spec, run_dir)
    entries = wait_for_runs(run_dir, 2)
    first.halt()
    assert [e["verdict"] for e in entries] == ["fresh"] * len(entries)
    assert all("error" not in e for e in entries), entries
    durations = [
        (
            datetime.fromisoformat(e["finished"]) - datetime.fromisoformat(e["started"])
        ).total_seconds()
        for e in entries
    ]
    assert min(durations) > 2, "each run outlasts the 2 s schedule, so overlap was possible"
    assert_no_overlap(entries)

    done = len(history(run_dir))
    time.sleep(3)  # a run is missed while the scheduler is down
    second = Scheduler(spec, run_dir)
    entries = wait_for_runs(run_dir, done + 1)
    second.halt()
    assert "picked up from the job store" in second.output.getvalue()
    assert_no_overlap(entries)


@pytest.mark.slow
def test_a_stale_champion_is_retuned_on_schedule(swept, tmp_path):
    now = {"source": "npz", "path": str(shifted_digits(tmp_path)), "target": "label"}
    retune = {"schedule": "*/2 * * * * *", "seeds": 1, "data": now, "trials": 4, "explore": 0.25}
    spec, run_dir = copy_of(swept, tmp_path, retune=retune)
    scheduler = Scheduler(spec, run_dir)
    (entry, *_) = wait_for_runs(run_dir, 1, timeout=300)
    scheduler.halt()
    assert entry["verdict"] == "stale" and "error" not in entry, entry
    assert entry["retune"]["replaced"] is True
    assert entry["retune"]["best"]["value"] > entry["retune"]["incumbent"]["score_now"]


@pytest.mark.chaos
@pytest.mark.slow
def test_a_scheduler_killed_mid_run_resumes_it_once_and_a_second_is_refused(swept, tmp_path):
    spec, run_dir = copy_of(swept, tmp_path, retune={"schedule": "*/2 * * * * *", "seeds": 1})
    first = Command(tmp_path, "schedule", spec, "--run-dir", run_dir, log="first.log")
    try:
        first.until(lambda: any((run_dir / INFLIGHT).glob("*.json")), timeout=120)
        (record,) = (run_dir / INFLIGHT).glob("*.json")
        cut_short = json.loads(record.read_text())["started"]
    finally:
        first.kill()  # the scheduler and the re-test it runs, mid-run
    assert history(run_dir) == [], "the run was cut short before its entry"

    # Two schedulers started at once on the same run directory: one is turned away.
    both = [Command(tmp_path, "schedule", spec, "--run-dir", run_dir, log=f"s{i}.log")
            for i in range(2)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while all(s.process.poll() is None for s in both) and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = [s for s in both if s.process.poll() is not None]
        assert len(refused) == 1 and refused[0].process.returncode == 2
        assert "a scheduler already runs" in refused[0].output()
        (running,) = [s for s in both if s not in refused]
        running.until(lambda: len(history(run_dir)) >= 2, timeout=240)
        os.kill(running.pid, signal.SIGTERM)
        running.wait(timeout=120)
    finally:
        for scheduler in both:
            scheduler.kill()
    entries = history(run_dir)
    resumed = [e for e in entries if "resumed" in e]
    assert len(resumed) == 1 and resumed[0]["resumed"] == cut_short, entries
    assert entries[0] is not None and "resumed" in entries[0], "the cut-short run goes first"
    assert all("error" not in e for e in entries), entries
    assert_no_overlap(entries)
    assert not list((run_dir / INFLIGHT).glob("*.json")), "nothing left in flight"
