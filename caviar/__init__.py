"""caviar: distributed coarse-to-fine hyperparameter sweeps for PyTorch, on Ray, driven by
Optuna, recorded in MLflow.

The Python API, for notebooks and scripts (the `caviar` command does the same from a shell):

    import caviar

    outcome = caviar.sweep("sweeps/specs/quick.yaml")   # a spec file, a dict or a SweepSpec
    outcome.best.label, outcome.best.value               # the champion's trial and score
    caviar.status("sweeps/specs/quick.yaml")["trials"]   # where a sweep stands
    model = caviar.load_champion("quick")                # the registered champion (pyfunc)

Everything lives in the sub-packages: `caviar.models` (the worker side: data, networks,
training), `caviar.cluster` (Ray), `caviar.sweeps` (search, records, operations, views).
"""

from typing import Any

__all__ = ["load_champion", "status", "sweep"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import caviar.sweeps.views.cli` (the `caviar` command) imports this
    # package first, and must not pay for Ray, MLflow and torch before it knows its command.
    if name in __all__:
        from caviar.sweeps.views import api

        return getattr(api, name)
    raise AttributeError(f"module 'caviar' has no attribute {name!r}")
