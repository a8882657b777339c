"""`caviar retest`: are the champion's hyperparameters still good on the data as it is now?

The champion's configuration is retrained from scratch on the current data with a few seeds;
the mean score is compared with the score recorded when it became champion. The verdict is
`stale` when it dropped by more than `retune.tolerance`, or when the champion is older than
`retune.max_age_days`; `fresh` otherwise. Each re-test is an MLflow run in the sweep's
experiment.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console

from cluster.executor import RayExecutor
from cluster.runtime import TrialResources, concurrent_slots, ray_session
from models.data import Dataset, build_dataset
from models.errors import CaviarError
from models.net import ModelConfig
from models.train import TrainConfig
from sweeps.executor import TrialExecutor, TrialJob, run_to_completion
from sweeps.mlflow_writer import MlflowWriter
from sweeps.spec import SweepSpec
from sweeps.tracking import ROLE, spool_dir

RETEST_ROLE = "retest"


@dataclass(frozen=True)
class Champion:
    """The registered champion: where it came from and the configuration that made it."""

    version: str
    run_id: str
    trial: str  # "stage#number"
    sweep: str  # the sweep (or re-tune) that produced it
    score: float  # the objective when it became champion
    promoted_at: datetime
    model: ModelConfig
    train: TrainConfig
    params: dict[str, Any]  # every config field, as logged

    def age_days(self, now: datetime) -> float:
        return (now - self.promoted_at).total_seconds() / 86400

    def values(self, spec: SweepSpec) -> dict[str, Any]:
        """The searched hyperparameters of the champion."""
        return {name: self.params[name] for name in spec.space if name in self.params}


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


def find_champion(tracking_uri: str, spec: SweepSpec) -> Champion:
    """The version with alias `champion` of the spec's registered model; CaviarError if none."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(spec.model_name, "champion")
    except MlflowException:
        raise CaviarError(
            f"no champion for '{spec.model_name}' in MLflow at {tracking_uri}; run "
            "`caviar sweep` on this spec first"
        ) from None
    if version.run_id is None:
        raise CaviarError(f"champion v{version.version} of '{spec.model_name}' has no run")
    params = {k: _parse(v) for k, v in client.get_run(version.run_id).data.params.items()}
    metric = spec.objective.metric
    promoted = version.tags.get("promoted_at")
    return Champion(
        version=str(version.version),
        run_id=version.run_id,
        trial=version.tags.get("trial", "?"),
        sweep=version.tags.get("sweep", spec.name),
        score=float(version.tags[metric]),
        promoted_at=(
            datetime.fromisoformat(promoted)
            if promoted
            else datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
        ),
        model=ModelConfig.model_validate(
            {k: v for k, v in params.items() if k in ModelConfig.model_fields}
        ),
        train=TrainConfig.model_validate(
            {k: v for k, v in params.items() if k in TrainConfig.model_fields}
        ),
        params=params,
    )


def current_data(spec: SweepSpec) -> Dataset:
    """The data as it is now: `retune.data` where the spec describes a shift, else `data`."""
    return build_dataset(spec.retune.data or spec.data)


def data_fingerprint(spec: SweepSpec) -> str:
    source = (spec.retune.data or spec.data).model_dump(mode="json")
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]


def judge(
    spec: SweepSpec,
    champion: Champion,
    executor: TrialExecutor,
    now: datetime | None = None,
) -> Verdict:
    """Retrain the champion's configuration with `retune.seeds` seeds and give the verdict."""
    now = now or datetime.now(UTC)
    retune = spec.retune
    jobs = [
        TrialJob(
            i, champion.model, champion.train.model_copy(update={"seed": champion.train.seed + i})
        )
        for i in range(retune.seeds)
    ]
    results = run_to_completion(executor, jobs)
    metric = spec.objective.metric
    outcomes = [results[job.key] for job in jobs]  # in seed order
    scores = [float(getattr(r[-1], metric)) for r in outcomes if not isinstance(r, str)]
    failures = [r for r in outcomes if isinstance(r, str)]
    maximize = spec.objective.direction == "maximize"
    reasons = []
    mean = statistics.mean(scores) if scores else float("nan")
    drop = (champion.score - mean) if maximize else (mean - champion.score)
    if not scores:
        reasons.append(f"the champion's configuration no longer trains: {failures[0]}")
    elif drop > retune.tolerance:
        reasons.append(
            f"{metric} dropped by {drop:.4f} ({champion.score:.4f} -> {mean:.4f}), "
            f"more than the tolerance of {retune.tolerance}"
        )
    age = champion.age_days(now)
    if age > retune.max_age_days:
        reasons.append(f"the champion is {age:.1f} days old, more than {retune.max_age_days}")
    return Verdict(
        name=spec.name,
        verdict="stale" if reasons else "fresh",
        reasons=reasons,
        champion={
            "version": champion.version,
            "trial": champion.trial,
            "sweep": champion.sweep,
            "score": champion.score,
            "promoted_at": champion.promoted_at.isoformat(),
            "age_days": round(age, 3),
        },
        retest={
            "scores": scores,
            "mean": mean if scores else None,
            "drop": drop if scores else None,
            "data": data_fingerprint(spec),
        },
        tolerance=retune.tolerance,
        max_age_days=retune.max_age_days,
        failures=failures,
    )


def record(verdict: Verdict, spec: SweepSpec, tracking_uri: str, spool: Any) -> None:
    """One MLflow run per re-test, in the sweep's experiment."""
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
    writer.log_batch(
        key,
        metrics=metrics,
        params={
            "seeds": str(spec.retune.seeds),
            "tolerance": str(spec.retune.tolerance),
            "max_age_days": str(spec.retune.max_age_days),
            "data": json.dumps((spec.retune.data or spec.data).model_dump(mode="json")),
        },
    )
    writer.set_status(key, "FINISHED")
    writer.close()


def retest(
    spec: SweepSpec, tracking_uri: str, run_dir: Any, ray_address: str | None, console: Console
) -> Verdict:
    """The whole `caviar retest`: find the champion, retrain it on Ray, judge, record."""
    champion = find_champion(tracking_uri, spec)
    data = current_data(spec)
    console.print(
        f"re-testing champion v{champion.version} ({champion.trial}, {spec.objective.metric} "
        f"{champion.score:.4f}) with {spec.retune.seeds} seed(s) on the current data"
    )
    resources = TrialResources(spec.parallel.cpus_per_trial, spec.parallel.gpus_per_trial)
    with ray_session(ray_address):
        executor = RayExecutor(
            data,
            resources,
            concurrent_slots(min(spec.parallel.trials, spec.retune.seeds), resources),
            max_retries=spec.parallel.max_retries,
        )
        try:
            verdict = judge(spec, champion, executor)
        finally:
            executor.close()
    record(verdict, spec, tracking_uri, spool_dir(run_dir, f"{spec.name}.retest"))
    return verdict


def as_json(verdict: Verdict) -> str:
    return json.dumps(asdict(verdict))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
