"""Which trials train together as one packed model, and the worker-side task that trains a
pack to completion. Torch-free at import (the driver groups jobs without loading torch);
the training itself is `caviar.models.packed.PackedTrainer`, loaded on the worker.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.data import Dataset

if TYPE_CHECKING:
    from caviar.models.executor import Trained, TrialJob

SHARED = ("batch_size", "optimizer", "device")  # what the members of a pack have in common


def packable(model: ModelConfig, trains: list[TrainConfig]) -> str | None:
    """Why these trials cannot be packed, or None when they can."""
    if getattr(model, "dropout", 0.0):
        return "dropout draws its masks differently in a pack"
    for field in SHARED:
        if len({getattr(t, field) for t in trains}) > 1:
            return f"members differ in train.{field}"
    return None


def shape_of(job: TrialJob) -> tuple[str, ...]:
    """What the members of a pack share: the model config and `SHARED` training settings."""
    return (job.model.model_dump_json(), *(str(getattr(job.train, f)) for f in SHARED))


def group(
    jobs: list[TrialJob], size: int, slots: int
) -> tuple[list[list[TrialJob]], list[TrialJob]]:
    """Packs of at most `size` same-shape jobs, spread over `slots` workers, and the jobs
    left to train alone (no partner, or not packable)."""
    shapes: dict[tuple[str, ...], list[TrialJob]] = {}
    for job in jobs:
        shapes.setdefault(shape_of(job), []).append(job)
    packs: list[list[TrialJob]] = []
    alone: list[TrialJob] = []
    for same in shapes.values():
        if len(same) < 2 or packable(same[0].model, [j.train for j in same]) is not None:
            alone += same
            continue
        count = max(min(slots, len(same) // 2), math.ceil(len(same) / size))
        share = math.ceil(len(same) / count)
        packs += [same[i : i + share] for i in range(0, len(same), share)]
    return packs, alone


def train_pack(
    data: Dataset, model: ModelConfig, trains: dict[int, TrainConfig], keep_weights: bool
) -> dict[int, Trained | str]:
    """Train the pack until every member has its epochs; runs on a worker. Each member's
    result is its curve (and weights), or why it failed ("diverged", an error)."""
    from caviar.models.executor import Trained
    from caviar.models.packed import PackedTrainer

    results: dict[int, Trained | str] = {}
    curves: dict[int, list[Any]] = {key: [] for key in trains}
    try:
        trainer = PackedTrainer(data, model, trains)
        while trainer.size:
            for key, metrics in trainer.run_epoch().items():
                curves[key].append(metrics)
                if metrics.diverged:
                    results[key] = "diverged"
                elif metrics.epoch >= trains[key].epochs:
                    weights = trainer.weights(key) if keep_weights else None
                    results[key] = Trained(curves[key], weights)
                else:
                    continue
                trainer.remove(key)
    except Exception as exc:  # an error in training ends the members still in the pack
        for key in trains:
            results.setdefault(key, f"{type(exc).__name__}: {exc}")
    return results
