"""Options several `caviar` commands share."""

from pathlib import Path
from typing import Annotated

import typer

SpecArg = Annotated[Path, typer.Argument(help="The sweep spec (YAML).", show_default=False)]
RunDir = Annotated[
    Path, typer.Option("--run-dir", help="Where studies, the MLflow store and locks live.")
]
Storage = Annotated[
    str | None,
    typer.Option("--storage", help="Optuna storage URL (default: SQLite in the run directory)."),
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join this Ray cluster instead of starting a local one."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help="MLflow tracking URI (default: SQLite in the run directory)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
