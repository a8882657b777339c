"""Where a sweep's record work runs (`caviar.sweeps.record.processes`)."""

from __future__ import annotations

from caviar.sweeps.record.processes import sweep_hosts
from tests.cluster.test_child_process import serving_children


def test_mlflows_child_starts_with_the_sweep_and_the_builders_only_when_told(tmp_path):
    before = serving_children()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with sweep_hosts(uri, tracking_server=False, on_cluster=False) as hosts:
        assert len(serving_children() - before) == 1, "MLflow's, which imports while Ray starts"
        hosts().builder.start()  # as the driver does once the first epoch is in
        assert len(serving_children() - before) == 2
