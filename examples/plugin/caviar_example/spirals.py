"""`spirals`: points on interleaved spiral arms, one class per arm, generated from a seed."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from caviar.models.data import SourceConfig, Table
from caviar.models.plugins import Source


class SpiralsSource(SourceConfig):
    source: Literal["spirals"] = "spirals"
    samples: int = Field(600, ge=30, description="Points over all arms.")
    arms: int = Field(3, ge=2, description="Spiral arms, one class each.")
    noise: float = Field(0.1, ge=0, description="Gaussian jitter of each point.")
    seed: int = Field(0, ge=0, description="Generator seed.")


def load(config: SpiralsSource) -> Table:
    rng = np.random.default_rng(config.seed)
    arm = rng.integers(0, config.arms, config.samples)
    radius = rng.uniform(0.1, 1.0, config.samples)
    angle = 3.0 * radius + 2 * np.pi * arm / config.arms
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += rng.normal(0.0, config.noise * 0.2, points.shape)
    labels = np.array([f"arm-{a}" for a in arm])
    return Table(points, labels, ("x", "y"), ("float64", "float64"))


SOURCE = Source(config=SpiralsSource, load=load)
