"""`caviar schedule`: re-test champions on their cron schedules, re-tune the stale ones.

APScheduler runs one job per spec (id = the sweep's name) on its `retune.schedule`. Jobs live
in a SQLite job store in the run directory, so a restarted scheduler picks them up where it
left off; runs missed while it was down are coalesced into one (`coalesce`, no misfire grace
limit), and a job never runs twice at once (`max_instances=1`). Each run is `caviar retest`,
then `caviar retune` when the verdict is stale: as child processes here, or as Ray jobs through
the job submission API when the scheduler is given a Ray dashboard address. Every run is
appended to `schedule-history.jsonl` in the run directory.

A run in flight is recorded in `schedule-inflight/<sweep>.json` until its history entry is
written. A scheduler that died mid-run (its runs die with it: they are its child processes)
leaves that record behind; the next scheduler on the run directory runs it again first, once,
as `resumed` in the history, before it takes up the schedule (a re-tune picks up its own sweep
where it stopped). One scheduler per run directory: a second is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from rich.console import Console

from caviar.sweeps.errors import SweepBusy
from caviar.sweeps.ops.cron import cron_trigger
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.specfile import load_spec

HISTORY = "schedule-history.jsonl"
INFLIGHT = "schedule-inflight"
STALE_EXIT = 3


def run_scheduler(
    specs: list[Path],
    run_dir: Path,
    ray_address: str | None,
    console: Console,
    stop: threading.Event | None = None,
    options: dict[str, str | None] | None = None,
) -> None:
    """Schedule each spec's re-test and block until `stop` is set (or Ctrl-C).

    `options` (storage, tracking_uri) are passed on to `caviar retest` and `caviar retune`."""
    loaded = [(path.resolve(), load_spec(path)) for path in specs]  # bad specs fail here, first
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "schedule.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusy(
                f"a scheduler already runs on {run_dir}; one per run directory"
            ) from None
        scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(url=f"sqlite:///{run_dir.resolve()}/schedule.db")
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        scheduler.start(paused=True)  # load the stored jobs before deciding what to add
        try:
            shared = {"run_dir": str(run_dir.resolve()), "ray_address": ray_address,
                      "options": {k: v for k, v in (options or {}).items() if v}}  # fmt: skip
            _resume_cut_short(run_dir, console)
            for path, spec in loaded:
                _schedule(scheduler, spec, {"spec_path": str(path), **shared}, console)
            scheduler.resume()
            for job in scheduler.get_jobs():
                console.print(f"  {job.id}: next run {job.next_run_time}", highlight=False)
            _wait(stop)
        finally:
            scheduler.shutdown(wait=True)


def _schedule(
    scheduler: BackgroundScheduler, spec: SweepSpec, kwargs: dict[str, Any], console: Console
) -> None:
    """Add the spec's job, or keep the stored one when nothing about it changed."""
    trigger = cron_trigger(spec.retune.schedule)
    job = scheduler.get_job(spec.name)
    if job is not None and str(job.trigger) == str(trigger) and job.kwargs == kwargs:
        console.print(f"{spec.name}: picked up from the job store")
        return
    scheduler.add_job(
        run_job, trigger, id=spec.name, name=f"retest {spec.name}", kwargs=kwargs,
        replace_existing=True,
    )  # fmt: skip
    console.print(f"{spec.name}: scheduled '{spec.retune.schedule}' (UTC)")


def _resume_cut_short(run_dir: Path, console: Console) -> None:
    """Run again, once each, the runs a scheduler that died left in flight."""
    for record in sorted((run_dir / INFLIGHT).glob("*.json")):
        cut = json.loads(record.read_text())
        console.print(f"{record.stem}: resuming the run cut short at {cut['started']}")
        run_job(**cut["kwargs"], resumes=cut["started"])


def run_job(
    spec_path: str,
    run_dir: str,
    ray_address: str | None,
    options: dict[str, str],
    resumes: str | None = None,
) -> dict[str, Any]:
    """One scheduled run: re-test; re-tune if stale. Recorded in the run directory's history;
    `resumes`: when the run a dead scheduler left in flight started."""
    started = datetime.now(UTC)
    entry: dict[str, Any] = {"spec": spec_path, "started": started.isoformat(), "verdict": None}
    if resumes is not None:
        entry["resumed"] = resumes
    kwargs = {"spec_path": spec_path, "run_dir": run_dir, "ray_address": ray_address,
              "options": options}  # fmt: skip
    inflight = _in_flight(kwargs, resumes or entry["started"])
    tracking = ["--tracking-uri", options["tracking_uri"]] if "tracking_uri" in options else []
    storage = ["--storage", options["storage"]] if "storage" in options else []
    try:
        run = _ray_job if ray_address else _child_process
        code, verdict = run(["retest", spec_path, "--json", *tracking], run_dir, ray_address)
        entry["verdict"] = verdict.get("verdict") if verdict else None
        if code == STALE_EXIT:
            retune = ["retune", spec_path, "--json", *tracking, *storage]
            code, summary = run(retune, run_dir, ray_address)
            entry["retune"] = summary
            if code != 0:
                entry["error"] = f"retune exited with {code}"
        elif code != 0:
            entry["error"] = f"retest exited with {code}"
    except Exception as exc:  # a failed run is recorded; the scheduler goes on
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["finished"] = datetime.now(UTC).isoformat()
    with open(Path(run_dir) / HISTORY, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    inflight.unlink(missing_ok=True)
    print(json.dumps(entry), flush=True)
    return entry


def _in_flight(kwargs: dict[str, Any], started: str) -> Path:
    """Record the run as in flight (what to run again if this scheduler dies); its path."""
    spec_path = str(kwargs["spec_path"])
    name = f"{Path(spec_path).stem}-{hashlib.sha256(spec_path.encode()).hexdigest()[:8]}"
    record = Path(kwargs["run_dir"]) / INFLIGHT / f"{name}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    temporary = record.with_suffix(".tmp")
    temporary.write_text(json.dumps({"started": started, "kwargs": kwargs}))
    os.replace(temporary, record)
    return record


def _child_process(
    args: list[str], run_dir: str, ray_address: str | None
) -> tuple[int, dict[str, Any] | None]:
    caviar = str(Path(sys.executable).parent / "caviar")
    done = subprocess.run(
        [caviar, *args, "--run-dir", run_dir], capture_output=True, text=True, check=False
    )
    return done.returncode, _last_json(done.stdout)


def _ray_job(
    args: list[str], run_dir: str, ray_address: str | None
) -> tuple[int, dict[str, Any] | None]:
    """The same command as a Ray job on the cluster: its spec's folder is the working dir."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    spec = Path(args[1])
    client = JobSubmissionClient(ray_address)
    command = ["caviar", args[0], spec.name, *args[2:], "--run-dir", run_dir]
    deadline = time.monotonic() + 120
    while True:
        try:
            job = client.submit_job(
                entrypoint=shlex.join(command), runtime_env={"working_dir": str(spec.parent)}
            )
            break
        except RuntimeError as exc:
            # A head that just started answers before its job agent is ready.
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    while (status := client.get_job_status(job)) not in {
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED
    }:  # fmt: skip
        time.sleep(2)
    result = _last_json(client.get_job_logs(job))
    if status is JobStatus.SUCCEEDED:
        return 0, result
    # Ray reports a non-zero exit as FAILED; the verdict printed before it tells stale apart.
    stale = args[0] == "retest" and result is not None and result.get("verdict") == "stale"
    return (STALE_EXIT if stale else 1), result


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            return parsed if isinstance(parsed, dict) else None
    return None


def _wait(stop: threading.Event | None) -> None:
    stop = stop or threading.Event()
    try:
        while not stop.wait(timeout=1.0):
            pass
    except KeyboardInterrupt:
        return


def history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
