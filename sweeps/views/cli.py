"""`caviar`: run, inspect and babysit sweeps.

Every command takes `--run-dir` (default `runs/`), where the Optuna studies, the MLflow store
and the locks live. The commands, in the order `caviar --help` lists them:
"""

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
    app()
