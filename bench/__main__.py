"""`python -m bench <benchmark>` from the repository root (see the Makefile's bench targets).
A bad input (a spec that is not there or not valid) ends it with one line and exit code 2."""

import sys

from bench import driver, packing, search, tracking
from bench.app import app
from bench.peers import command as peers
from caviar.models.errors import CaviarError

__all__ = ["driver", "packing", "peers", "search", "tracking"]

try:
    app()
except CaviarError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
