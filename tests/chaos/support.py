"""What the chaos tests share: a `caviar` command run as users run it, in a process session of
its own (so everything it starts can be found, and killed, afterwards), and the records it
leaves in Optuna and MLflow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient

from caviar.sweeps.search.studies import (
    FAIL_REASON,
    INTERRUPTED,
    is_carried,
    open_storage,
    study_name,
)
from tests.conftest import CAVIAR

# Slow enough to be caught mid-trial (a few seconds per trial), small enough for two cores.
SLOW = {
    "name": "chaos",
    "data": {"source": "digits"},
    "model": {"hidden_units": 256, "layers": 3},
    "train": {"epochs": 12, "batch_size": 16},
    "space": {"lr": {"scale": "log", "low": 1.0e-3, "high": 0.3}},
    "stages": [{"name": "search", "trials": 6, "sampler": "random"}],
    "parallel": {"trials": 2, "cpus_per_trial": 1},
    "seed": 11,
}


class Command:
    """`caviar ARGS` in a session of its own, its output in `log`."""

    def __init__(self, folder: Path, *args: Any, log: str = "caviar.log") -> None:
        self.log = folder / log
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [CAVIAR, *map(str, args)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    def until(self, condition: Callable[[], bool], timeout: float = 120) -> None:
        """Wait for `condition` while the command runs; fail with its output otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"caviar ended ({self.process.returncode}):\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting; output so far:\n{self.output()}")

    def left_running(self, grace: float = 10.0) -> list[str]:
        """Processes still alive in the command's session after `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            alive = session_processes(self.pid)
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the whole session: the crash of a machine, or `kill -9` of its tree."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()


def session_processes(sid: int) -> list[str]:
    """`pid command` of the live (not zombie) processes of session `sid`."""
    listing = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "-s", str(sid)], capture_output=True, text=True
    ).stdout
    return [
        " ".join((pid, args))
        for pid, stat, args in (line.split(None, 2) for line in listing.splitlines())
        if not stat.startswith("Z")
    ]


def trial_workers(sid: int, training: bool = False) -> list[int]:
    """Process ids of the Ray trial workers a `caviar` command in session `sid` started;
    with `training`, only those training a trial now (Ray names a worker's process after the
    call it runs: `ray::TrialWorker.begin`, `ray::TrialWorker.train_epochs`)."""
    training_calls = ("TrialWorker.begin", "TrialWorker.train_epochs", "TrialWorker.next_epoch")
    calls = training_calls if training else ("TrialWorker",)
    return [int(line.split()[0]) for line in session_processes(sid)
            if any(call in line for call in calls)]  # fmt: skip


def study(run_dir: Path, sweep: str, stage: str, storage: str | None = None) -> optuna.Study:
    url = storage or f"journal:///{run_dir / 'optuna.journal'}"
    return optuna.load_study(study_name=study_name(sweep, stage), storage=open_storage(url))


def own(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """A stage's own trials, not those carried over from the stage before (which keep their
    MLflow run and budget there)."""
    return [t for t in trials if not is_carried(t)]


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that spent budget: the stage's own, finished, not closed as interrupted."""
    return [
        t
        for t in own(trials)
        if t.state.is_finished() and t.user_attrs.get(FAIL_REASON) != INTERRUPTED
    ]


def mlflow_runs(run_dir: Path, experiment: str) -> list[Any]:
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def status(spec: Path, run_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [CAVIAR, "status", str(spec), "--json", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout) if done.returncode == 0 else {}
