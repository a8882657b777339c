"""Live progress of a sweep in the terminal: a bar per stage and a line per finished trial."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caviar.sweeps.search.best import Best, TrialEnd
from caviar.sweeps.search.stages import StagePlan

_STYLE = {"complete": "green", "pruned": "yellow", "failed": "red"}


class RichProgress:
    """Implements the driver's `ProgressSink`; use as a context manager around the sweep."""

    def __init__(self, metric: str, console: Console | None = None) -> None:
        self.metric = metric
        self.console = console or Console()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.console.quiet,  # nothing to draw: no refresh thread either
            refresh_per_second=4,  # rich's 10 a second take CPU from the workers on small machines
        )
        self._task: Any = None
        self._counts = {"running": 0, "complete": 0, "pruned": 0, "failed": 0}
        self._best = ""

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def stage_started(self, plan: StagePlan, done: int) -> None:
        self._counts = {"running": 0, "complete": 0, "pruned": 0, "failed": 0}
        self._task = self._bar.add_task(
            f"{plan.name} ({plan.spec.sampler.value})",
            total=plan.trials,
            completed=done,
            counts=self._describe(),
        )
        if done:
            self.note(f"stage {plan.name}: {done}/{plan.trials} trials already done, continuing")

    def running(self, count: int) -> None:
        self._counts["running"] = count
        self._refresh()

    def trial_ended(self, end: TrialEnd, best: Best) -> None:
        self._counts[end.state] += 1
        if best.value is not None:
            self._best = f"best {self.metric} {best.value:.4f} ({best.stage} #{best.number})"
        self._bar.advance(self._task)
        self._refresh()
        style = _STYLE.get(end.state, "white")
        parts = [f"{end.stage} #{end.number:<3d}", f"[{style}]{end.state:<8}[/{style}]"]
        parts.append(f"epoch {end.epochs:<3d}")
        if end.value is not None:
            parts.append(f"{self.metric}={end.value:.4f}")
        if end.reason:
            parts.append(f"({end.reason})")
        parts.extend(f"{k}={_short(v)}" for k, v in end.params.items())
        self.console.print(" ".join(parts), highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def _refresh(self) -> None:
        if self._task is not None:
            self._bar.update(self._task, counts=self._describe())

    def _describe(self) -> str:
        c = self._counts
        return (
            f"{c['running']} running · {c['complete']} complete · {c['pruned']} pruned · "
            f"{c['failed']} failed  {self._best}"
        )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
