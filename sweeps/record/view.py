"""Where a user lands in the MLflow UI: the trials of a sweep, compared.

MLflow 3's UI opens on its GenAI start page, and an experiment's runs table shows neither
parameters nor metrics until columns are picked. Each sweep's experiment therefore carries a
shared view (the UI's own `mlflow.sharedViewState.<key>` experiment tag): the trial runs only,
sorted by the objective, with the objective, the losses and every searched hyperparameter as
columns; and `landing_url` opens it in the model-training workflow.
"""

from __future__ import annotations

import json
from urllib.parse import quote

VIEW_KEY = "caviar"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
KIND_TAG = "mlflow.experimentKind"  # tells MLflow's UI this is model training, not GenAI
KIND = "custom_model_development"


def trials_view(metric: str, direction: str, searched: list[str]) -> dict[str, str]:
    """The experiment tags that give a sweep's experiment its comparison view."""
    metrics = dict.fromkeys([metric, "val_accuracy", "val_loss", "train_loss"])
    state = {
        "searchFilter": "tags.`caviar.role` = 'trial'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": direction == "minimize",
        "selectedColumns": [f"metrics.`{m}`" for m in metrics]
        + [f"params.`{p}`" for p in searched]
        + ["tags.`stage`", "tags.`state`"],
    }
    return {VIEW_TAG: json.dumps(state), KIND_TAG: KIND}


def landing_url(base: str, experiment_id: str) -> str:
    """The experiment's trials view, in the UI's model-training workflow."""
    query = f"workflowType=machine_learning&viewStateShareKey={quote(VIEW_KEY)}"
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"
