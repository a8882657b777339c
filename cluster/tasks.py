"""Tasks on the workers that train trials (`TrialExecutor.run_tasks`): a packed run, a
re-test's seeds, an export. A worker that died is replaced and the task run again; one whose
task raised is replaced, not reused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

if TYPE_CHECKING:
    from caviar.cluster.executor import RayExecutor

Result = TypeVar("Result")


def run_tasks(pool: RayExecutor, task: Callable[..., Result],
              calls: list[tuple[Any, ...]]) -> list[Result]:  # fmt: skip
    """`calls` in chunks of one per slot, each on a worker of `pool`."""
    results: list[Result] = []
    for start in range(0, len(calls), pool.slots):
        chunk = calls[start : start + pool.slots]
        actors = [pool.borrow() for _ in chunk]
        refs = [a.run_task.remote(task, *args) for a, args in zip(actors, chunk, strict=True)]
        results += [_task_result(pool, task, *run) for run in zip(actors, refs, chunk, strict=True)]
    return results


def _task_result(pool: RayExecutor, task: Callable[..., Result], actor: Any, ref: ray.ObjectRef,
                 args: tuple[Any, ...], attempt: int = 0) -> Result:  # fmt: skip
    """What `task` returned on `actor` (back to `pool`'s idle workers then)."""
    try:
        result: Result = ray.get(ref)
    except RayTaskError as exc:  # the task's own error
        pool.discard(actor)
        raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
    except RayError:
        pool.discard(actor)
        if attempt >= pool.max_retries:
            raise
        actor = pool.borrow()
        return _task_result(
            pool, task, actor, actor.run_task.remote(task, *args), args, attempt + 1
        )
    pool.give_back(actor)
    return result
