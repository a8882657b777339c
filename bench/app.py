"""The benchmarks' command line: `python -m bench search|tracking`."""

import typer

app = typer.Typer(add_completion=False, help="Benchmarks of caviar, through the real product.")


@app.callback()
def benchmarks() -> None:
    """Benchmarks of caviar's search and tracking; see each command."""
