"""The `caviar` Typer app, its consoles, and how user errors are shown.

Commands live in `cli_sweep` (sweep, validate, train), `cli_records` (status, report, sync, ui)
and `cli_ops` (retest, retune, schedule); `cli` puts them together. Problems the user can fix
print one line and exit with code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from caviar.models.errors import CaviarError
from caviar.sweeps.views.signals import EXIT_CODE, stop_on_sigterm, terminated

if TYPE_CHECKING:
    from caviar.sweeps.launch import Locations
    from caviar.sweeps.search.spec import SweepSpec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distributed coarse-to-fine hyperparameter sweeps for PyTorch.",
)
console = Console()
errors = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """A `CaviarError` becomes one line on stderr and exit code 2; Ctrl-C exits with 130,
    SIGTERM (handled the same way) with 143."""
    stop_on_sigterm()
    try:
        yield
    except CaviarError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if terminated(exc) else "interrupted"
        errors.print(
            f"{how}; running trials were marked interrupted and will be re-run "
            "when the same command is started again"
        )
        raise typer.Exit(EXIT_CODE if terminated(exc) else 130) from None


def open_sweep(
    spec: Path, run_dir: Path, storage: str | None = None, tracking_uri: str | None = None
) -> tuple[SweepSpec, Locations]:
    """The validated spec and where its sweep's state lives (raises `CaviarError`)."""
    from caviar.sweeps.launch import Locations
    from caviar.sweeps.search.specfile import load_spec

    return load_spec(spec), Locations(run_dir, storage, tracking_uri)


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
