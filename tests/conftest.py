"""Shared fixtures: one Ray instance per test session, tiny specs written to temp folders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from models.data import build_dataset
from sweeps.driver import SweepDriver
from sweeps.executor import InProcessExecutor
from sweeps.spec import load_spec
from sweeps.studies import open_storage, study_name
from sweeps.tracking import Tracker

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
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def swept(tmp_path_factory):
    """A two-stage sweep on the in-process executor, run once per test session:
    (spec, coarse study, fine study, tracker, folder, progress notes)."""
    folder = tmp_path_factory.mktemp("c2f")
    spec = load_spec(write_spec(folder, spec_dict(stages=TWO_STAGES)))
    storage = open_storage(f"sqlite:///{folder / 'optuna.db'}")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", spec.name, folder / "artifacts")
    tracker.start_sweep(spec.name, {}, {}, {})
    data = build_dataset(spec.data)
    progress = RecordingProgress()
    SweepDriver(spec, storage, tracker, InProcessExecutor(data), progress).run()
    coarse, fine = (
        optuna.load_study(study_name=study_name("tiny", stage), storage=storage)
        for stage in ("coarse", "fine")
    )
    return spec, coarse, fine, tracker, folder, progress.notes
