"""`caviar retest`: are the champion's hyperparameters still good on the data as it is now?

The champion's configuration is retrained from scratch on the current data with the seeds of
its reference scores (measured when it became champion, or when a re-tune last kept it), so
the comparison is paired: same configuration, same seeds, only the data differs. The verdict
is `stale` when the mean dropped by more than `retune.tolerance`, or when the champion is
older than `retune.max_age_days`; `fresh` otherwise. Each re-test is an MLflow run in the sweep's
experiment, written through the sweep's journal while holding the sweep's lock.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from caviar.models.cache import data_file
from caviar.models.data import Dataset, build_dataset
from caviar.models.errors import DataError
from caviar.models.executor import Trained, TrialExecutor, TrialJob, run_to_completion
from caviar.sweeps.launch import joined_cluster, workers
from caviar.sweeps.record.champion import Champion, find_champion
from caviar.sweeps.record.tracking import ROLE, spool_dir
from caviar.sweeps.record.writer import MlflowWriter
from caviar.sweeps.search.lock import sweep_lock
from caviar.sweeps.search.spec import SweepSpec

RETEST_ROLE = "retest"


@dataclass
class Verdict:
    name: str
    verdict: str  # fresh or stale
    reasons: list[str]
    champion: dict[str, Any]
    retest: dict[str, Any]
    tolerance: float
    max_age_days: float
    failures: list[str] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        return self.verdict == "stale"


def current_data(spec: SweepSpec) -> Dataset:
    """The data as it is now: `retune.data` where the spec describes a shift, else `data`.
    Errors in `retune.data` name its fields (the sources name the `data` section's)."""
    if spec.retune.data is None:
        return build_dataset(spec.data)
    try:
        return build_dataset(spec.retune.data)
    except DataError as exc:
        raise DataError(_DATA_FIELD.sub(r"retune.\g<0>", str(exc))) from None


# A `data` field named in a source's error ("(data.path)"), not a file such as data.csv.
_DATA_FIELD = re.compile(r"(?<![\w/.-])data\.(path|target|test_fraction|val_fraction|source)\b")


def data_fingerprint(spec: SweepSpec) -> str:
    """The current data: its settings, and a file's contents."""
    source = spec.retune.data or spec.data
    named = {"source": source.model_dump(mode="json"), "file": data_file(source)}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:8]


def champion_of(spec: SweepSpec, tracking_uri: str) -> Champion:
    """The registered champion of `spec`, scored in its objective."""
    return find_champion(tracking_uri, spec.model_name, spec.objective.metric)


def retest_seeds(spec: SweepSpec, champion: Champion) -> list[int]:
    """The seeds of the champion's reference scores (so the comparison is paired), or its own
    seed and the next `retune.seeds - 1` for a champion recorded without them."""
    if champion.reference:
        return list(champion.reference)
    return [champion.train.seed + i for i in range(spec.retune.seeds)]


def retrain_scores(
    spec: SweepSpec, champion: Champion, executor: TrialExecutor
) -> tuple[list[float], list[str]]:
    """The champion's configuration trained with each of `retest_seeds`: the final scores, in
    seed order, and the reasons of the seeds that failed."""
    jobs = [
        TrialJob(i, champion.model, champion.train.model_copy(update={"seed": seed}))
        for i, seed in enumerate(retest_seeds(spec, champion))
    ]
    results = run_to_completion(executor, jobs, pack=spec.parallel.pack)
    outcomes = [results[job.key] for job in jobs]
    metric = spec.objective.metric
    scores = [float(getattr(r.curve[-1], metric)) for r in outcomes if isinstance(r, Trained)]
    return scores, [r for r in outcomes if isinstance(r, str)]


def judge(
    spec: SweepSpec,
    champion: Champion,
    executor: TrialExecutor,
    now: datetime | None = None,
    data: Dataset | None = None,
) -> Verdict:
    """Retrain the champion's configuration on its reference seeds and give the verdict;
    stale too where the current `data` has other columns or labels than the champion
    serves (it could not answer for them, however well its configuration trains)."""
    now, retune = now or datetime.now(UTC), spec.retune
    assert spec.objective.direction is not None
    scores, failures = retrain_scores(spec, champion, executor)
    mean = statistics.mean(scores) if scores else float("nan")
    drop = -spec.objective.direction.gain(mean, champion.reference_score)
    age = champion.age_days(now)
    reasons = _stale_reasons(spec, champion, mean, drop, age, failures)
    changes = champion.schema_changes(data.features, data.classes) if data else []
    reasons += [f"the data changed: {change}" for change in changes]
    return Verdict(
        name=spec.name,
        verdict="stale" if reasons else "fresh",
        reasons=reasons,
        champion={
            "version": champion.version, "trial": champion.trial, "sweep": champion.sweep,
            "score": champion.reference_score, "trial_score": champion.score,
            "reference_seeds": list(champion.reference),
            "promoted_at": champion.promoted_at.isoformat(),
            "age_days": round(age, 3),
        },
        retest={
            "scores": scores, "mean": mean if scores else None, "drop": drop if scores else None,
            "data": data_fingerprint(spec), "seeds": retest_seeds(spec, champion),
        },
        tolerance=retune.tolerance,
        max_age_days=retune.max_age_days,
        failures=failures,
    )  # fmt: skip


def _stale_reasons(
    spec: SweepSpec, champion: Champion, mean: float, drop: float, age: float, failed: list[str]
) -> list[str]:
    """Why the champion is stale (none: fresh). `mean` is NaN when no seed trained."""
    retune = spec.retune
    reasons = []
    if mean != mean:
        reasons.append(f"the champion's configuration no longer trains: {failed[0]}")
    elif drop > retune.tolerance:
        reasons.append(
            f"{spec.objective.metric} dropped by {drop:.4f} ({champion.reference_score:.4f} -> "
            f"{mean:.4f}), more than the tolerance of {retune.tolerance}"
        )
    if age > retune.max_age_days:
        reasons.append(f"the champion is {age:.1f} days old, more than {retune.max_age_days}")
    return reasons


def record(verdict: Verdict, spec: SweepSpec, tracking_uri: str, spool: Path) -> None:
    """One MLflow run per re-test, in the sweep's experiment, through the journal in `spool`
    (the sweep's own: hold its lock)."""
    writer = MlflowWriter(tracking_uri, spec.experiment_name, spool)
    key = f"retest:{uuid.uuid4().hex}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    writer.create_run(
        key,
        f"retest {stamp}",
        {
            ROLE: RETEST_ROLE,
            "verdict": verdict.verdict,
            "reasons": "; ".join(verdict.reasons) or "none",
            "champion_version": verdict.champion["version"],
            "champion_trial": verdict.champion["trial"],
        },
        fresh=True,
    )
    writer.log_batch(key, metrics=_metrics(verdict), params=_params(spec, verdict))
    writer.set_status(key, "FINISHED")
    writer.close()


def _metrics(verdict: Verdict) -> list[tuple[str, float, int, int]]:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [
        ("recorded_score", verdict.champion["score"], now_ms, 0),
        ("age_days", verdict.champion["age_days"], now_ms, 0),
    ]
    metrics += [("retest_score", s, now_ms, i) for i, s in enumerate(verdict.retest["scores"])]
    if verdict.retest["mean"] is not None:
        metrics += [
            ("retest_mean", verdict.retest["mean"], now_ms, 0),
            ("drop", verdict.retest["drop"], now_ms, 0),
        ]
    return metrics


def _params(spec: SweepSpec, verdict: Verdict) -> dict[str, str]:
    return {
        "seeds": json.dumps(verdict.retest["seeds"]),
        "tolerance": str(spec.retune.tolerance),
        "max_age_days": str(spec.retune.max_age_days),
        "data": json.dumps((spec.retune.data or spec.data).model_dump(mode="json")),
    }


def retest(
    spec: SweepSpec, tracking_uri: str, run_dir: Path, ray_address: str | None, console: Console
) -> Verdict:
    """The whole `caviar retest`: find the champion, retrain it on Ray, judge, record."""
    champion = champion_of(spec, tracking_uri)
    data = current_data(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    with sweep_lock(run_dir, spec.name):
        console.print(
            f"re-testing champion v{champion.version} ({champion.trial}, "
            f"{spec.objective.metric} {champion.reference_score:.4f}) with "
            f"{len(retest_seeds(spec, champion))} seed(s) on the current data"
        )
        wanted = min(spec.parallel.trials, spec.retune.seeds)
        local = joined_cluster(ray_address, run_dir, console)
        with workers(spec, ray_address, console, local, wanted) as executor:
            executor.load(data)
            verdict = judge(spec, champion, executor, data=data)
        record(verdict, spec, tracking_uri, spool_dir(run_dir, spec.name))
    return verdict


def as_json(verdict: Verdict) -> str:
    return json.dumps(asdict(verdict))
