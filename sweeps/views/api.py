"""The Python API's entry points (`caviar.sweep`, `caviar.status`, `caviar.load_champion`):
the same as the CLI's commands, for notebooks and scripts. No logic of their own: they take a
spec in any form and hand it to the same launch, status and registry code."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from caviar.sweeps.launch import Locations, SweepOutcome, execute_sweep
from caviar.sweeps.record.tracking import default_tracking_uri, spool_dir
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.specfile import load_spec, spec_from_dict
from caviar.sweeps.views.status import sweep_status

SpecLike = str | Path | dict[str, Any] | SweepSpec


def sweep(
    spec: SpecLike,
    run_dir: str | Path = "runs",
    *,
    ray_address: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    quiet: bool = False,
) -> SweepOutcome:
    """Run (or continue) a sweep: `spec` is a YAML file, a dict (relative data paths are
    relative to the working directory) or a `SweepSpec`. Returns the outcome: `best` (the
    champion's trial), `champion` (its registry URI), `where` (run directory and stores).
    A bad spec or data raises `caviar.models.errors.CaviarError` with the field named."""
    loaded, source = _spec(spec)
    where = Locations(Path(run_dir), storage, tracking_uri)
    console = Console(quiet=quiet)
    return execute_sweep(loaded, where, ray_address, console, source=source)


def status(
    spec: SpecLike, run_dir: str | Path = "runs", storage: str | None = None
) -> dict[str, Any]:
    """Where a sweep stands: what `caviar status --json` prints."""
    loaded, _ = _spec(spec)
    where = Locations(Path(run_dir), storage)
    return sweep_status(loaded, where.storage_url, spool_dir(where.run_dir, loaded.name))


def load_champion(
    name: str,
    run_dir: str | Path = "runs",
    tracking_uri: str | None = None,
    alias: str = "champion",
) -> Any:
    """The registered champion `name@alias` as an MLflow pyfunc model: `predict(DataFrame)`
    takes named columns in any order and returns a probability per class label."""
    import mlflow

    uri = tracking_uri or default_tracking_uri(Path(run_dir))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    # MLflow copies the model's files into a new temporary folder and leaves it there; the
    # champion reads them all while it loads, so the copy goes once it has loaded.
    try:
        with tempfile.TemporaryDirectory(prefix="caviar-champion-") as copy:
            return mlflow.pyfunc.load_model(f"models:/{name}@{alias}", dst_path=copy)
    finally:
        mlflow.set_tracking_uri(previous)


def _spec(spec: SpecLike) -> tuple[SweepSpec, dict[str, str]]:
    """The validated spec and the files it came from (kept with the sweep's MLflow run)."""
    import yaml

    if isinstance(spec, SweepSpec):
        return spec, {"spec.yaml": yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)}
    if isinstance(spec, dict):
        return spec_from_dict(spec, Path.cwd()), {
            "spec.yaml": yaml.safe_dump(spec, sort_keys=False)
        }
    path = Path(spec)
    return load_spec(path), {"spec.yaml": path.read_text(encoding="utf-8")}
