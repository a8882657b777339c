"""One driver per sweep: a second one is refused, early and without writing anything."""

from __future__ import annotations

import pytest

from caviar.sweeps.errors import SweepBusy
from caviar.sweeps.search.lock import refuse_if_busy, sweep_lock


def test_a_held_sweep_is_refused_before_anything_starts(tmp_path):
    refuse_if_busy(tmp_path / "runs", "tiny")  # never run: nothing to refuse, nothing written
    assert not (tmp_path / "runs").exists()
    with sweep_lock(tmp_path / "runs", "tiny"):
        with pytest.raises(SweepBusy, match="'tiny' is already running"):
            refuse_if_busy(tmp_path / "runs", "tiny")
        with pytest.raises(SweepBusy, match="driver pid"), sweep_lock(tmp_path / "runs", "tiny"):
            pass
        refuse_if_busy(tmp_path / "runs", "other")  # another sweep is free
    refuse_if_busy(tmp_path / "runs", "tiny")  # released: free again
