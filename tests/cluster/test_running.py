"""What the executor asks of a trial's worker: calls up to the next decision, never further
than one segment past a decision the driver has not answered (no Ray: a recording worker)."""

from __future__ import annotations

from types import SimpleNamespace

from caviar.cluster.running import RunningTrial
from caviar.models.config import MlpConfig, TrainConfig
from caviar.models.executor import TrialJob
from caviar.models.metrics import EpochMetrics


def recording_worker(calls: list[tuple[str, int]]) -> SimpleNamespace:
    """A worker handle whose `begin` and `train_epochs` calls are recorded, each its own ref."""

    def method(name: str) -> SimpleNamespace:
        def remote(*args: object) -> tuple[str, int]:
            calls.append((name, int(args[-1])))  # the epochs asked for
            return calls[-1]

        return SimpleNamespace(remote=remote)

    return SimpleNamespace(begin=method("begin"), train_epochs=method("train_epochs"))


def epoch(number: int, seconds: float = 0.01) -> EpochMetrics:
    return EpochMetrics(number, 0.5, 0.5, 0.5, 0.1, seconds)


def finish_call(trial: RunningTrial, epochs: range, answer: bool = True) -> None:
    """The worker's oldest call returns `epochs`; the driver lets it go on after each."""
    trial.ahead.popleft()
    trial.returned([epoch(e) for e in epochs])
    for _ in epochs if answer else ():
        trial.answered += 1
    trial.ask(0.5)


def test_calls_end_at_decisions_and_stop_one_segment_past_an_unanswered_one():
    calls: list[tuple[str, int]] = []
    job = TrialJob(1, MlpConfig(), TrainConfig(epochs=20), decisions=(2, 6, 18))
    trial = RunningTrial(job, recording_worker(calls))
    trial.ask(0.5)
    assert calls == [("begin", 1), ("train_epochs", 1)], "one epoch a call until one is timed"
    finish_call(trial, range(1, 2))
    assert calls[-1] == ("train_epochs", 4), "epochs 3-6: up to the decision after epoch 2's"
    finish_call(trial, range(2, 3))
    assert calls[-1] == ("train_epochs", 12) and trial.asked == 18
    finish_call(trial, range(3, 7), answer=False)  # epoch 6 not answered yet
    assert trial.asked == 18 and len(calls) == 4, "nothing past 18 before 6 is answered"
    trial.answered = 6
    trial.ask(0.5)
    assert calls[-1] == ("train_epochs", 2) and trial.asked == 20


def test_calls_hold_about_the_seconds_asked_and_a_restart_starts_over():
    calls: list[tuple[str, int]] = []
    trial = RunningTrial(
        TrialJob(2, MlpConfig(), TrainConfig(epochs=100), ()), recording_worker(calls)
    )
    trial.ask(0.5)
    trial.ahead.popleft()
    trial.returned([epoch(1, seconds=0.1)])
    trial.ask(0.5)
    assert calls == [("begin", 1), ("train_epochs", 1), ("train_epochs", 5)]
    trial.restart()  # its worker died: a new one, whose epochs are not timed yet
    trial.ask(0.5)
    assert calls[-2:] == [("begin", 1), ("train_epochs", 1)]
