"""`python -m bench <benchmark>` from the repository root (see the Makefile's bench targets)."""

from bench import search, tracking
from bench.app import app

__all__ = ["search", "tracking"]

app()
