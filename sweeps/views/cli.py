"""`caviar`: run, inspect and babysit sweeps.

Every command takes `--run-dir` (default `runs/`), where the Optuna studies, the MLflow store
and the locks live. The commands, in the order `caviar --help` lists them:
"""

import gc

from caviar.sweeps.views import cli_cluster, cli_ops, cli_records, cli_sweep
from caviar.sweeps.views.app import app

for command in (
    cli_sweep.sweep,
    cli_sweep.validate,
    cli_sweep.train,
    cli_records.status,
    cli_records.report,
    cli_ops.retest,
    cli_ops.retune,
    cli_ops.schedule,
    cli_records.sync,
    cli_records.ui,
    cli_sweep.plugins,
):
    app.command()(command)
app.add_typer(cli_cluster.cluster_app, name="cluster")

__all__ = ["app", "main"]


def main() -> None:
    """The `caviar` command. On its way out, every object is frozen out of the garbage
    collector's reach (`gc.freeze`): the interpreter's last collection would otherwise walk
    the objects of MLflow, Ray, Optuna and SQLAlchemy one by one to free memory the OS takes
    back anyway (about 1 s of a sweep's exit on two cores). atexit handlers still run."""
    try:
        app()
    finally:
        gc.freeze()
