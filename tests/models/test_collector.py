"""The garbage collector's pause over a process's start-up (`caviar.models.collector`)."""

import gc
from collections.abc import Iterator

import pytest

from caviar.models.collector import collector_paused, pause_collector


@pytest.fixture(autouse=True)
def collector_as_found() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.unfreeze()  # whatever ran before in this session (the CLI's exit freezes) starts unfrozen
    yield
    gc.unfreeze()  # the test session's objects go back within the collector's reach
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_paused_until_resumed_then_start_up_objects_are_frozen() -> None:
    gc.enable()
    resume = pause_collector()
    assert not gc.isenabled()
    frozen_before = gc.get_freeze_count()
    resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen_before  # the full passes no longer walk them
    gc.disable()
    resume()  # a second call changes nothing
    assert not gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off() -> None:
    gc.disable()
    frozen_before = gc.get_freeze_count()
    resume = pause_collector()
    resume()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == frozen_before


def test_a_sweep_in_a_longer_lived_process_lets_its_objects_back_at_the_end() -> None:
    gc.enable()
    with collector_paused() as started:
        assert not gc.isenabled()
        started()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # garbage among them is freed again


def test_objects_the_process_froze_itself_stay_frozen() -> None:
    gc.enable()
    gc.freeze()
    with collector_paused():
        pass
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
