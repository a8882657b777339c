"""The sweep spec: everything a sweep needs, as typed, validated sections.

`caviar.sweeps.search.specfile.load_spec` reads a YAML file into a `SweepSpec`; validation
errors name the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from caviar.models.config import ModelConfig, TrainConfig
from caviar.models.packs import packable
from caviar.sweeps.ops.cron import cron_trigger
from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.params import Param
from caviar.sweeps.search.sections import (
    DEFAULT_FAMILY,
    DataSection,
    ModelSection,
    with_default_family,
)
from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.search.spec_checks import check_space, check_stages

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplerName(StrEnum):
    RANDOM = "random"
    QMC = "qmc"  # scrambled Sobol sequence
    TPE = "tpe"
    GRID = "grid"


class PrunerName(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    SUCCESSIVE_HALVING = "successive_halving"
    HYPERBAND = "hyperband"


class PrunerSpec(Strict):
    kind: PrunerName = Field(PrunerName.NONE, description="Which pruner stops weak trials early.")
    warmup_epochs: int = Field(
        2, ge=0, le=100_000, description="median: epochs before a trial can be pruned."
    )
    startup_trials: int = Field(
        4, ge=0, le=1_000_000, description="median: trials completed before pruning."
    )
    min_epochs: int = Field(
        1, ge=1, le=100_000, description="halving/hyperband: smallest epoch budget."
    )
    reduction_factor: int = Field(
        3, ge=2, le=1000, description="halving/hyperband: keep 1/factor each rung."
    )


class StageSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Stage name, unique within the sweep.")
    trials: int = Field(ge=1, le=1_000_000, description="Trial budget of this stage.")
    sampler: SamplerName = Field(SamplerName.RANDOM, description="random, qmc, tpe or grid.")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    epochs: int | None = Field(
        None, ge=1, le=100_000, description="Epoch budget per trial; default train.epochs."
    )
    grid_points: int = Field(3, ge=1, le=1000, description="grid: points per numeric parameter.")
    keep_top: float = Field(
        0.2,
        gt=0,
        description="Best trials of the stage before that set this stage's box: a fraction "
        "(below 1) of its finished trials, or a count (1 or more).",
    )
    margin: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Widening of the box on each side, as a share of the full range "
        "in the parameter's own scale.",
    )
    narrow: bool = Field(
        True,
        description="Search the box around the best trials so far (false: the full ranges).",
    )
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Configurations (searched hyperparameters) this stage evaluates first.",
    )
    shape_per_pack: bool = Field(
        False,
        description="With parallel.pack: the searched shape parameters (widths, depth, batch "
        "size, optimizer) are drawn once per pack, so a stage that searches them still trains "
        "its trials packed; the other parameters are drawn for each trial.",
    )

    @model_validator(mode="after")
    def _keep_top_is_fraction_or_count(self) -> StageSpec:
        if self.keep_top >= 1 and self.keep_top != int(self.keep_top):
            raise ValueError(
                f"keep_top must be a fraction below 1 or a whole count, but got {self.keep_top}"
            )
        return self


class ObjectiveSpec(Strict):
    metric: Literal["val_accuracy", "val_loss", "train_loss"] = "val_accuracy"
    direction: Direction | None = Field(
        None, description="Default: maximize for accuracy, minimize for a loss."
    )

    @model_validator(mode="after")
    def _direction_fits_metric(self) -> ObjectiveSpec:
        natural = Direction.natural(self.metric)
        if self.direction is None:
            self.direction = natural
        elif self.direction != natural:
            raise ValueError(
                f"direction for {self.metric} should be {natural}, not {self.direction}"
            )
        return self


class RetuneSpec(Strict):
    """When to re-test the champion, when it counts as stale, and how to re-tune."""

    schedule: str = Field(
        "0 3 * * 1",
        description="cron: minute hour day month day-of-week (0/7 = Sunday), "
        "or six fields with seconds first.",
    )
    tolerance: float = Field(0.02, ge=0, description="Stale when the score drops by more.")
    max_age_days: float = Field(30, gt=0, description="Stale when the champion is older.")
    seeds: int = Field(
        3, ge=1, le=1000, description="Re-test trains the champion's config this often."
    )
    data: DataSection | None = Field(
        None, description="The data as it is now, when it differs from `data` (drift demos)."
    )
    trials: int = Field(
        24, ge=1, le=1_000_000, description="Re-tune budget, besides the re-evaluated trials."
    )
    explore: float = Field(
        0.25, ge=0, lt=1, description="Share of the re-tune budget over the full ranges again."
    )
    keep_previous: int = Field(
        3,
        ge=0,
        le=1000,
        description="Previous best trials re-evaluated first, besides the champion.",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, schedule: str) -> str:
        try:
            cron_trigger(schedule)
        except ValueError as exc:
            raise ValueError(f"not a cron expression: {exc}") from None
        return schedule


class SelectSpec(Strict):
    """Seed-robust choice of the champion among the best trials (see `select`)."""

    top_k: int = Field(3, ge=1, le=1000, description="Best trials trained again with other seeds.")
    seeds: int = Field(2, ge=1, le=1000, description="Extra seeds per trial; the best mean wins.")


class ParallelSpec(Strict):
    trials: int = Field(2, ge=1, le=100_000, description="Trials running at once.")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs reserved by each trial.")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs per trial; fractions share a GPU.")
    max_retries: int = Field(
        2, ge=0, le=100, description="Re-runs of a trial whose worker process died."
    )
    pack: int = Field(
        1,
        ge=1,
        le=256,
        description="Same-shape trials trained as one batched model on a worker: searched "
        "trials (a stage's trials join a pack of their shape; see stages' shape_per_pack), "
        "re-test seeds, seed-robust re-runs; 1 trains each alone.",
    )
    epoch_timeout: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="Seconds an epoch may run before its trial fails as a timeout and its "
        "worker is replaced (the first epoch gets 120 s more); default: 10x the trial's "
        "slowest epoch, at least 60 s (600 s for the first).",
    )


class SweepSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Sweep name; running it again resumes.")
    data: DataSection
    model: ModelSection = Field(default_factory=DEFAULT_FAMILY)
    train: TrainConfig = Field(default_factory=TrainConfig)
    space: dict[str, Param] = Field(description="The searched hyperparameters and their scales.")
    stages: list[StageSpec] = Field(min_length=1, description="Search stages, run in order.")
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the samplers.")
    retune: RetuneSpec = Field(default_factory=RetuneSpec)
    select: SelectSpec | None = Field(
        None, description="Choose the champion by its mean over several seeds."
    )
    experiment: str | None = Field(
        None, pattern=NAME_PATTERN, description="MLflow experiment; default: `name`."
    )
    registered_model: str | None = Field(
        None, pattern=NAME_PATTERN, description="Registry name of the champion; default: `name`."
    )
    _folder: Path | None = PrivateAttr(None)  # the spec file's folder, when read from one

    @model_validator(mode="before")
    @classmethod
    def _family_defaults_to_mlp(cls, raw: Any) -> Any:
        return with_default_family(raw)

    @model_validator(mode="after")
    def _sections_agree(self) -> SweepSpec:
        check_space(self)
        check_stages(self)
        return self

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def model_name(self) -> str:
        return self.registered_model or self.name

    @property
    def search_pack(self) -> int:
        """Trials per worker in searched stages: `parallel.pack` where the networks can pack
        (no dropout, neither set nor searched), else 1."""
        if "dropout" in self.space or packable(self.model, [self.train]) is not None:
            return 1
        return self.parallel.pack

    def stage_epochs(self, stage: StageSpec) -> int:
        return stage.epochs or self.train.epochs

    def configs(
        self, values: dict[str, Any], epochs: int | None = None
    ) -> tuple[ModelConfig, TrainConfig]:
        """The model and training configs of one trial: the spec's, with `values` put in."""
        family = type(self.model)
        model = {
            **self.model.model_dump(),
            **{k: v for k, v in values.items() if k in family.model_fields},
        }
        train = {
            **self.train.model_dump(),
            **{k: v for k, v in values.items() if k in TrainConfig.model_fields},
        }
        if epochs is not None:
            train["epochs"] = epochs
        return family.model_validate(model), TrainConfig.model_validate(train)

    def fingerprint(self) -> str:
        """Hash of what defines the results; budgets and parallelism may change on resume.
        A data file counts by its path relative to the spec's folder, so a moved checkout
        still resumes its sweeps."""
        fields = self.model_dump(
            mode="json", include={"data", "model", "train", "space", "objective"}
        )
        path = getattr(self.data, "path", None)
        if path is not None and self._folder is not None:
            fields["data"]["path"] = os.path.relpath(path, self._folder)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
