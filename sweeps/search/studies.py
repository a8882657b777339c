"""The sweep's Optuna studies: one per stage, in one storage, written by the driver alone.

Trial user attributes carry what Optuna's states cannot: why a trial failed and which MLflow
run records it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.errors import CaviarError
from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.journal_storage import GroupCommitJournal
from caviar.sweeps.sqlite_wal import use_wal

FAIL_REASON = "fail_reason"
MLFLOW_RUN_KEY = "mlflow_run_key"  # the trial run's key (see caviar.sweeps.record.writer)
CHECKPOINT = "checkpoint"  # weights of a trial that was the best when it finished
CHAMPION = "champion"  # study attribute: the trial last published as the champion
INCUMBENT = "incumbent"  # a re-tune's re-evaluation of the current champion (its version)
# A configuration queued by the stage (its `enqueue` list, "incumbent" for a re-tune's
# champion): value = its place in the queue, so a redone set-up does not queue it twice.
QUEUED = "queued"
DATA_FILE = "data_file"  # a stage's recipe: the data file's name and a hash of its contents
# A trial cut short because the driver stopped; it does not use up budget and is run again.
INTERRUPTED = "interrupted"
# Study attribute: what a stage's results depend on (the spec's fingerprint, the stage's
# epochs, pruner and grid); a resumed stage must have the same.
RECIPE = "recipe"
# A trial of an earlier stage copied into a later stage's study as a first observation;
# it was trained once, in its own stage, and counts there only.
CARRIED_FROM = "carried_from"
# Study attributes: the stage's search space (SearchSpace.dump) and its box in user form.
SPACE = "space"
BOX = "box"
KEPT = "kept_from_previous_stage"

optuna.logging.set_verbosity(optuna.logging.WARNING)


JOURNAL = "journal:///"  # Optuna's journal file (see `journal_storage`), caviar's default


def default_storage(run_dir: Path) -> str:
    """A run directory's studies: the journal file, or the SQLite file of a run directory
    that sweeps before caviar used the journal left there."""
    legacy = run_dir / "optuna.db"
    if legacy.exists():
        return f"sqlite:///{legacy.resolve()}"
    return f"{JOURNAL}{(run_dir / 'optuna.journal').resolve()}"


def study_name(sweep: str, stage: str) -> str:
    return f"{sweep}/{stage}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """`journal:///path` (the default), an SQLAlchemy URL (sqlite, postgresql, ...), or a
    URL Optuna itself understands."""
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(GroupCommitJournal(str(path)))
    if url.startswith("sqlite:"):
        use_wal()
        # A reader (`caviar status`) may hold the file briefly; wait for it rather than fail.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    return optuna.storages.RDBStorage(url) if "://" in url else optuna.storages.get_storage(url)


def storage_exists(url: str) -> bool:
    """False when the default file is not there (reading must not create it)."""
    for scheme in (JOURNAL, "sqlite:///"):
        if url.startswith(scheme):
            return Path(url.removeprefix(scheme)).exists()
    return True


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    direction: Direction,
    recipe: dict[str, Any],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the stage's study or continue it; refuses one started from another `recipe`
    (the spec's fingerprint and the stage's epochs, pruner and grid)."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction.study_direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if RECIPE not in study.user_attrs:
        study.set_user_attr(RECIPE, recipe)
    check_recipe(study, recipe)
    return study


def check_recipe(study: optuna.Study, recipe: dict[str, Any]) -> None:
    """Refuse to continue a study started from another spec or another stage setting."""
    recorded = study.user_attrs.get(RECIPE, {})
    name = study.study_name
    if recorded.get("fingerprint", recipe["fingerprint"]) != recipe["fingerprint"]:
        raise CaviarError(
            f"study '{name}' was started from a spec with different data, model, train, space "
            "or objective; give the sweep a new `name` or use another --run-dir"
        )
    was, now_file = recorded.get(DATA_FILE), recipe.get(DATA_FILE)
    if was is not None and now_file is not None and was["sha256"] != now_file["sha256"]:
        raise CaviarError(
            f"stage '{name.rsplit('/', 1)[-1]}' was started on other contents of "
            f"{now_file['name']} (sha256 {was['sha256']} then, {now_file['sha256']} now): its "
            "trials were scored on the old file. Give the sweep a new `name` to sweep the new "
            "data, or check the champion on it with `caviar retest` and `caviar retune`"
        )
    then, now = _flat(recorded), _flat(recipe)
    for field, value in now.items():
        if (
            field.split(".")[0] not in ("fingerprint", DATA_FILE)
            and field in then
            and then[field] != value
        ):
            raise CaviarError(
                f"stage '{name.rsplit('/', 1)[-1]}' was started with {field} {then[field]}, "
                f"the spec now says {value}: a started stage keeps its epochs, pruner, grid and "
                "queued configurations (`enqueue`); give the sweep a new `name` to change them, "
                "or add a stage"
            )


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"pruner": {"kind": "median"}} -> {"pruner.kind": "median"}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def read_stages(
    storage_url: str, sweep: str, stages: list[str]
) -> list[tuple[str, optuna.Study | None]]:
    """Each stage's study of `sweep`, None where it has not started. Creates nothing."""
    storage = open_storage(storage_url) if storage_exists(storage_url) else None
    return [
        (stage, load_study(storage, study_name(sweep, stage)) if storage else None)
        for stage in stages
    ]


def fail_interrupted(
    storage: optuna.storages.BaseStorage, study: optuna.Study
) -> list[FrozenTrial]:
    """Mark trials left RUNNING by a driver that is gone as failed ("interrupted").

    Only call this while holding the sweep's lock: then no live driver owns those trials.
    (Optuna's heartbeat would do this, but it only works inside `Study.optimize`, not with
    ask/tell.)
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in stale:
        # The storage is the only way to give a trial we no longer hold as a `Trial` an
        # attribute; it must be set before the trial is finished.
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, FAIL_REASON, INTERRUPTED)
        study.tell(trial.number, state=TrialState.FAIL)
    return stale


def is_carried(trial: FrozenTrial) -> bool:
    return CARRIED_FROM in trial.user_attrs


def own_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The stage's own trials, without those carried over from the stage before."""
    return [t for t in trials if not is_carried(t)]


def uses_budget(trial: FrozenTrial) -> bool:
    """Finished trials count against the budget, except those the driver's death cut short
    and those carried over from an earlier stage."""
    if is_carried(trial):
        return False
    if trial.state is TrialState.FAIL:
        return trial.user_attrs.get(FAIL_REASON) != INTERRUPTED
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)


def count_states(trials: list[FrozenTrial]) -> dict[str, int]:
    """complete / pruned / failed / running counts of own trials, as `caviar status` shows them."""
    counts = Counter(t.state for t in own_trials(trials))
    return {
        "complete": counts[TrialState.COMPLETE],
        "pruned": counts[TrialState.PRUNED],
        "failed": counts[TrialState.FAIL],
        "running": counts[TrialState.RUNNING] + counts[TrialState.WAITING],
    }
