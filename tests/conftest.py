"""Shared fixtures: one Ray instance per test session, tiny specs written to temp folders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def spec_dict(**changes: Any) -> dict[str, Any]:
    """TINY_SPEC with top-level sections replaced."""
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(copy.deepcopy(changes))
    return spec


def write_spec(folder: Path, spec: dict[str, Any] | None = None, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec if spec is not None else TINY_SPEC, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def ray_instance():
    """The session's one local Ray instance; sweeps run in-process reuse it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
