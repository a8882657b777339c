"""The sweep's lease in the study storage: one driver per sweep, whatever its run directory."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from caviar.sweeps.errors import SweepBusy
from caviar.sweeps.search.lease import Holder, lease_store, refuse_if_leased, sweep_lease


@pytest.fixture(params=["journal", "sqlite"])
def storage(request, tmp_path):
    if request.param == "journal":
        (tmp_path / "optuna.journal").touch()
        return f"journal:///{tmp_path / 'optuna.journal'}"
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.chaos
def test_a_second_driver_is_refused_while_the_first_holds_the_lease(storage):
    refuse_if_leased(storage, "tiny")  # free: nothing to refuse
    with sweep_lease(storage, "tiny"):
        with pytest.raises(SweepBusy, match=r"already running \(driver pid \d+ on "):
            refuse_if_leased(storage, "tiny")
        with (
            pytest.raises(SweepBusy, match="lease in the study storage"),
            sweep_lease(storage, "tiny"),
        ):
            pass
        with sweep_lease(storage, "other"):  # another sweep in the same storage is free
            pass
    with sweep_lease(storage, "tiny"):  # released: free again
        pass


def test_the_holder_renews_its_lease_past_its_lifetime(storage):
    with sweep_lease(storage, "tiny", ttl=1.0, renew=0.2):
        time.sleep(1.5)
        with pytest.raises(SweepBusy):
            refuse_if_leased(storage, "tiny")


@pytest.mark.chaos
def test_a_dead_holders_lease_expires(storage):
    store = lease_store(storage)
    assert store is not None
    elsewhere = Holder("another-host:4242:abcd", time.time() + 0.5)
    assert store.swap("tiny", None, elsewhere)
    with pytest.raises(SweepBusy, match="driver pid 4242 on another-host"):
        refuse_if_leased(storage, "tiny")
    time.sleep(0.6)
    with sweep_lease(storage, "tiny"):  # expired: taken over
        pass


def test_a_dead_holder_on_this_machine_is_replaced_at_once(storage):
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    store = lease_store(storage)
    assert store is not None
    dead = Holder(f"{socket.gethostname()}:{gone.stdout.strip()}:abcd", time.time() + 60)
    assert store.swap("tiny", None, dead)
    with sweep_lease(storage, "tiny"):
        pass


def test_only_one_of_two_racing_drivers_wins(storage):
    store = lease_store(storage)
    assert store is not None
    first = Holder("a:1:x", time.time() + 30)
    second = Holder("b:2:y", time.time() + 30)
    assert store.swap("tiny", None, first)
    assert not store.swap("tiny", None, second), "it saw no lease, but one was taken meanwhile"
    assert store.read("tiny") == first


def test_a_sweep_on_the_journal_file_does_not_load_sqlalchemy(tmp_path):
    """SQLAlchemy takes 0.2 s to import, before Ray starts: only SQL storages pay for it."""
    journal = tmp_path / "optuna.journal"
    journal.touch()
    script = (
        "import sys; import caviar.sweeps.launch; "
        "from caviar.sweeps.search.lease import sweep_lease; "
        f'exec(\'with sweep_lease("journal:///{journal}", "tiny"): pass\'); '
        "print('sqlalchemy' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert found.stdout.split() == ["False"], found.stderr
