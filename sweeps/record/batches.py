"""Many journaled MLflow operations sent as few requests: what can go together from the head
of the queue, and each run's share of it.

A backlog (a tracking server slower than the epochs come in, or the end of a sweep) is not
sent one request per epoch. The batch at the head of the queue is split by run; each run's
operations keep their order, its consecutive `log_batch` writes merged into one request; the
runs' shares are independent of each other, so against a tracking server they are sent side
by side. A batch stops before an operation that depends on another run (a run whose parent
is created in the same batch) or touches more than one run (the registry, the experiment).
"""

from __future__ import annotations

import itertools

from caviar.sweeps.record.journal import Op

WINDOW = 500  # operations looked at, at most
ONE_RUN = {"log_batch", "status", "artifacts", "create_run"}  # operations on their own run


def head_batch(window: list[Op], across_runs: bool) -> list[Op]:
    """The operations at the head of `window` that can be applied as one batch: only
    `log_batch` writes when not `across_runs`, else any operation on one run."""
    if not across_runs:
        return list(itertools.takewhile(lambda op: op["op"] == "log_batch", window))
    batch: list[Op] = []
    created: set[str] = set()
    for op in window:
        if op["op"] not in ONE_RUN or (op["op"] == "create_run" and op.get("parent") in created):
            break
        if op["op"] == "create_run":
            created.add(op["key"])
        batch.append(op)
    return batch


def by_run(batch: list[Op]) -> list[list[Op]]:
    """Each run's operations in order, its consecutive `log_batch` writes merged into one.
    A param written twice with different values cannot merge (MLflow refuses the second):
    ValueError, and the caller sends the operations one by one."""
    runs: dict[str, list[Op]] = {}
    for op in batch:
        sequence = runs.setdefault(op["key"], [])
        if op["op"] == "log_batch" and sequence and sequence[-1]["op"] == "log_batch":
            sequence[-1] = _merge(sequence[-1], op)
        elif op["op"] == "log_batch":
            sequence.append({**op, "metrics": list(op["metrics"]), "params": dict(op["params"]),
                             "tags": dict(op["tags"])})  # fmt: skip
        else:
            sequence.append(op)
    return list(runs.values())


def _merge(into: Op, op: Op) -> Op:
    into["metrics"] += op["metrics"]
    for name, value in op["params"].items():
        if into["params"].setdefault(name, value) != value:
            raise ValueError(f"param {name} written twice with different values")
    into["tags"].update(op["tags"])
    return into
