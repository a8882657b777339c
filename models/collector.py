"""Python's cyclic garbage collector, paused while a process starts up.

Start-up (importing torch, Ray, MLflow, Optuna; starting Ray; opening the stores) makes
objects that live as long as the process. Each of the collector's full passes walks every
object made so far, and as start-up makes more it passes again and again: a sweep's driver
spent 0.6-0.85 s of its start in six such passes on two cores, before its first trial.
Paused, and what start-up made frozen out of its reach afterwards (`gc.freeze`), it walks
only what the sweep makes from then on. The few cycles start-up left as garbage (about
2,000 objects in a driver, 6,500 in a worker) are frozen with the rest.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def pause_collector() -> Callable[[], None]:
    """Turn the collector off; returns `resume`, which freezes every object the process
    holds now (start-up's, and what was there before) and turns the collector back on (once;
    later calls do nothing). A collector that was off stays off, and nothing is frozen."""
    if not gc.isenabled():  # the process's own choice (or a pause under way): left alone
        return lambda: None
    gc.disable()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        if not resumed:
            resumed = True
            gc.freeze()
            gc.enable()

    return resume


@contextmanager
def collector_paused() -> Iterator[Callable[[], None]]:
    """`pause_collector` for work in a process that may outlive it (a notebook's): yields
    `resume`, called at the block's end if not before; then what was frozen is let back
    into the collector's reach (unless the process had frozen objects of its own), so the
    garbage among it is freed as before."""
    ours = gc.get_freeze_count() == 0
    resume = pause_collector()
    try:
        yield resume
    finally:
        resume()
        if ours:
            gc.unfreeze()
