"""What produced a sweep: code version, package versions and hardware, as run tags."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def provenance(device: str) -> dict[str, str]:
    """What produced a sweep: code version, package versions and hardware, as run tags."""
    tags = {
        "mlflow.source.git.commit": _git_sha(),
        "python": platform.python_version(),
        "host": platform.node(),
        "device": device,
    }
    for package in ("torch", "optuna", "mlflow", "ray", "numpy", "caviar"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    return tags


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


def _git_sha() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
