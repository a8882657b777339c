"""`python -m bench <benchmark>` from the repository root (see the Makefile's bench targets)."""

from bench import driver, packing, search, tracking
from bench.app import app
from bench.peers import command as peers

__all__ = ["driver", "packing", "peers", "search", "tracking"]

app()
