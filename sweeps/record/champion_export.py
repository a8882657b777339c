"""The champion's MLflow model folder: a pyfunc model (`champion_model.py`, MLflow's models
from code) over the network exported with `torch.export`, its input columns and class labels.

Loading it needs torch, pandas and MLflow, not caviar. Its signature names the input columns
with the source's own types (a CSV's integer column stays `long`), and the batch size is free.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature

from caviar.models.data import Dataset

MODEL_CODE = Path(__file__).with_name("champion_model.py")

# MLflow says at INFO that it checks the input example against the signature; the sweep's
# progress is the place for what matters to a user.
logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)


def save_champion(network: torch.nn.Module, data: Dataset, folder: Path) -> Path:
    """Write the MLflow model of `network` (raw inputs -> class probabilities, in eval mode)
    under `folder`; returns the model's folder."""
    example = raw_frame(data, data.x_test[:5])
    inputs = torch.tensor(example.to_numpy(dtype=np.float32))
    program = torch.export.export(
        network.eval(), (inputs,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, folder / "network.pt2")
    meta = {"features": list(data.features), "classes": list(data.classes)}
    (folder / "meta.json").write_text(json.dumps(meta))
    with torch.no_grad():
        probabilities = pd.DataFrame(network(inputs).numpy(), columns=list(data.classes))
    model_dir = folder / "model"
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: the source's types
        # are the point here (a CSV's integer column is taken as integers).
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(example, probabilities, params={"output": "probabilities"})
    mlflow.pyfunc.save_model(
        model_dir,
        python_model=str(MODEL_CODE),
        artifacts={"network": str(folder / "network.pt2"), "meta": str(folder / "meta.json")},
        signature=signature,
        input_example=example,
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
            f"mlflow=={mlflow.__version__}",
        ],
    )
    return model_dir


def raw_frame(data: Dataset, x: np.ndarray) -> pd.DataFrame:
    """Normalised rows as the source had them: named columns with their original types."""
    raw = (x.astype(np.float64) * data.std + data.mean).astype(np.float64)
    frame = pd.DataFrame(raw, columns=list(data.features))
    for name, kind in zip(data.features, data.feature_types, strict=True):
        if np.dtype(kind).kind in "iu":
            frame[name] = np.rint(frame[name]).astype(kind)
        elif np.dtype(kind).kind == "b":
            frame[name] = frame[name] > 0.5
    return frame
