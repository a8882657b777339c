"""Where a sweep's record work runs (`caviar.sweeps.record.processes`)."""

from __future__ import annotations

from caviar.sweeps.record.processes import sweep_hosts
from tests.cluster.test_child_process import serving_children


def test_no_child_starts_with_the_sweep_only_when_first_used(tmp_path):
    before = serving_children()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with sweep_hosts(uri, tracking_server=False, on_cluster=False) as hosts:
        assert serving_children() == before, "nothing takes CPU from Ray's and the workers' start"
        hosts().builder.start()  # as the driver does once the first epoch is in
        assert len(serving_children() - before) == 1
        assert hosts().mlflow("open", (uri, "e", None))  # the writer's first use, after its hold
        assert len(serving_children() - before) == 2
