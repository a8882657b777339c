"""Shared fixtures: one Ray instance per test session, tiny specs written to temp folders."""

from __future__ import annotations

import atexit
import copy
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import requests
import yaml
from mlflow import MlflowClient

from caviar.models.data import build_dataset
from caviar.models.inprocess import InProcessExecutor
from caviar.sweeps.record.champion import ChampionKeeper
from caviar.sweeps.record.champion_export import ChampionBuilder
from caviar.sweeps.record.tracking import Tracker, local_artifacts, spool_dir
from caviar.sweeps.record.view import trials_view
from caviar.sweeps.record.writer import MlflowWriter
from caviar.sweeps.search.driver import SweepDriver
from caviar.sweeps.search.specfile import load_spec
from caviar.sweeps.search.studies import default_storage, open_storage, study_name

# Generated data sets are cached per test session, not in the user's ~/.cache (workers and
# CLI subprocesses inherit the variable); the folder goes when the session ends.
os.environ["CAVIAR_CACHE"] = tempfile.mkdtemp(prefix="caviar-test-cache-")
atexit.register(shutil.rmtree, os.environ["CAVIAR_CACHE"], ignore_errors=True)

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "data": {"source": "digits"},
    "model": {"hidden_units": 32, "layers": 1},
    "train": {"epochs": 4, "batch_size": 64},
    "space": {
        "lr": {"scale": "log", "low": 1.0e-4, "high": 1.0},
        "momentum": {"scale": "log1m", "low": 0.5, "high": 0.99},
    },
    "stages": [
        {
            "name": "search",
            "trials": 8,
            "sampler": "random",
            "pruner": {"kind": "median", "startup_trials": 2, "warmup_epochs": 1},
        }
    ],
    "parallel": {"trials": 2, "cpus_per_trial": 1},
    "seed": 3,
}


TWO_STAGES = [
    {
        "name": "coarse",
        "trials": 8,
        "sampler": "random",
        "pruner": {"kind": "median", "startup_trials": 2, "warmup_epochs": 1},
    },
    {"name": "fine", "trials": 4, "sampler": "tpe", "keep_top": 2, "margin": 0.05},
]


def spec_dict(**changes: Any) -> dict[str, Any]:
    """TINY_SPEC with top-level sections replaced."""
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(copy.deepcopy(changes))
    return spec


def write_spec(folder: Path, spec: dict[str, Any] | None = None, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec if spec is not None else TINY_SPEC, sort_keys=False))
    return path


class RecordingProgress:
    """A progress sink for driver tests: keeps the trials that ended and the notes."""

    def __init__(self) -> None:
        self.ended: list[Any] = []
        self.notes: list[str] = []

    def stage_started(self, plan: Any, done: int) -> None:
        pass

    def trial_ended(self, end: Any, best: Any) -> None:
        self.ended.append(end)

    def running(self, count: int) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture(scope="session")
def ray_instance():
    """The session's one local Ray instance; sweeps run in-process reuse it."""
    ray = pytest.importorskip("ray")
    from caviar.cluster.embedded_start import quick_embedded_start

    with quick_embedded_start():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@dataclass
class LocalSweep:
    """A sweep driven in this process (no Ray): real Optuna and MLflow stores in `folder`."""

    spec: Any
    folder: Path
    storage: Any
    tracker: Tracker
    progress: RecordingProgress
    best: Any = None
    result: Any = None

    tracking_uri: str = ""

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    @property
    def experiment_id(self) -> str:
        return self.client.get_experiment_by_name(self.spec.name).experiment_id

    def runs(self, filter_string: str = "") -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string, max_results=1000)

    def parent(self) -> Any:
        (parent,) = self.runs("tags.`caviar.role` = 'sweep'")
        return parent

    def study(self, stage: str) -> optuna.Study:
        return optuna.load_study(study_name=study_name(self.spec.name, stage), storage=self.storage)


class InProcessHost:
    """A `Host` that is this process: `build()`'s methods, called directly."""

    def __init__(self, build: Any) -> None:
        self._built = build()

    def __call__(self, method: str, *args: Any) -> Any:
        return getattr(self._built, method)(*args)

    def start(self) -> None:
        pass

    def restart(self) -> None:
        pass


@functools.cache
def champion_builder() -> InProcessHost:
    """One champion builder for the session's in-process sweeps (it readies itself once)."""
    return InProcessHost(ChampionBuilder)


def run_local_sweep(
    folder: Path,
    spec_changes: dict[str, Any] | None = None,
    executor: Any = None,
    tracking_uri: str | None = None,
    hold_seconds: float = 0.0,
) -> LocalSweep:
    """Write a spec (TINY_SPEC with `spec_changes`) to `folder` and drive it to the end there.
    MLflow goes to `tracking_uri`, by default SQLite in `folder`; the writes wait
    `hold_seconds` or until the driver releases them."""
    spec = load_spec(write_spec(folder, spec_dict(**(spec_changes or {}))))
    data = build_dataset(spec.data)
    uri = tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
    sweep = LocalSweep(
        spec=spec,
        folder=folder,
        storage=open_storage(default_storage(folder)),
        tracker=Tracker(
            MlflowWriter(
                uri,
                spec.name,
                spool_dir(folder, spec.name),
                None if tracking_uri else local_artifacts(folder, spec.name),
                background=True,
                hold_seconds=hold_seconds,
            ),
            spec.name,
        ),
        progress=RecordingProgress(),
        tracking_uri=uri,
    )
    view = trials_view(spec.objective.metric, str(spec.objective.direction), list(spec.space))
    sweep.tracker.start_sweep(spec.name, {}, {}, {}, view=view)
    champion = ChampionKeeper(
        data, sweep.tracker, folder / "checkpoints", spec.name, sweep.progress.note,
        champion_builder(),
    )  # fmt: skip
    driver = SweepDriver(
        spec,
        sweep.storage,
        sweep.tracker,
        executor or InProcessExecutor(data),
        sweep.progress,
        champion,
    )
    sweep.result = driver.run()
    sweep.best = sweep.result.best
    return sweep


@pytest.fixture(scope="session")
def swept(tmp_path_factory) -> LocalSweep:
    """A two-stage sweep on the in-process executor, run once per test session."""
    return run_local_sweep(tmp_path_factory.mktemp("c2f"), {"stages": TWO_STAGES})


@dataclass
class MlflowServer:
    """A real `mlflow server`, started the way users start it: `caviar ui`."""

    run_dir: Path
    port: int
    store: str | None = None  # backend store; default SQLite in run_dir
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        log = open(self.run_dir.parent / f"mlflow-server-{self.port}.log", "ab")  # noqa: SIM115
        command = [CAVIAR, "ui", "--run-dir", str(self.run_dir), "--port", str(self.port)]
        self.process = subprocess.Popen(
            command + (["--store", self.store] if self.store else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server on port {self.port} did not start; see {log.name}")

    @property
    def log(self) -> Path:
        return self.run_dir.parent / f"mlflow-server-{self.port}.log"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


CAVIAR = str(Path(sys.executable).parent / "caviar")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path):
    """A tracking server on a free port, with its store in its own folder; stopped after."""
    server = MlflowServer(tmp_path / "server-runs", free_port())
    server.run_dir.mkdir()
    server.start()
    yield server
    server.stop()


@dataclass
class Postgres:
    """A throwaway PostgreSQL server on loopback; `url(db)` gives SQLAlchemy URLs."""

    folder: Path
    port: int
    bin_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql://caviar@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> None:
        # PostgreSQL refuses to run as root; tests in CI often are root.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bin_dir / tool), *args], check=True, capture_output=True)


def _postgres_bin() -> Path | None:
    """The folder with initdb, pg_ctl and createdb (Debian keeps them off PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL with databases `optuna` and `mlflow`; skipped where it is not installed."""
    bin_dir = _postgres_bin()
    if bin_dir is None or not all((bin_dir / t).exists() for t in ("pg_ctl", "createdb")):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="caviar-pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = Postgres(folder, free_port(), bin_dir)
    data = str(folder / "data")
    server.run("initdb", "-D", data, "-A", "trust", "-U", "caviar")
    options = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1"
    server.run("pg_ctl", "-D", data, "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        for database in ("optuna", "mlflow"):
            server.run(
                "createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "caviar", database
            )
        yield server
    finally:
        server.run("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
