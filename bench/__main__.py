"""`python -m bench <benchmark>` from the repository root (see the Makefile's bench targets)."""

from bench import driver, search, tracking
from bench.app import app

__all__ = ["driver", "search", "tracking"]

app()
