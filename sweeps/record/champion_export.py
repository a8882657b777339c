"""The champion's MLflow model folder: a pyfunc model (`champion_model.py`, MLflow's models
from code) over the network exported with `torch.export`, its input columns and class labels.

Loading it needs torch, pandas and MLflow, not caviar. Its signature names the input columns
with the source's own types (a CSV's integer column stays `long`), and the batch size is free.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SavedChampion:
    model_dir: Path
    fallback: str | None  # why the network was pickled instead of exported, if it was


def save_champion(network: torch.nn.Module, data: Dataset, folder: Path) -> SavedChampion:
    """Write the MLflow model of `network` (raw inputs -> class probabilities, in eval mode)
    under `folder`. The network is exported with `torch.export`; one it cannot capture (a
    plugin's data-dependent control flow, say) is saved pickled instead, which loads only
    where the package that defines it is installed."""
    example = raw_frame(data, data.x_test[:5])
    inputs = torch.tensor(example.to_numpy(dtype=np.float32))
    network.eval()
    stored, fallback = _store(network, inputs, folder)
    meta = {"features": list(data.features), "classes": list(data.classes), "format": stored.suffix}
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
        artifacts={"network": str(stored), "meta": str(folder / "meta.json")},
        signature=signature,
        input_example=example,
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
            f"mlflow=={mlflow.__version__}",
        ],
    )
    return SavedChampion(model_dir, fallback)


def _store(network: torch.nn.Module, inputs: torch.Tensor, folder: Path) -> tuple[Path, str | None]:
    """`network.pt2` (an exported program, any batch size), or `network.pt` (the pickled
    module) with the reason when export fails."""
    try:
        program = torch.export.export(
            network, (inputs,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    except Exception as exc:  # torch.export's many refusals all mean "cannot capture this"
        path = folder / "network.pt"
        torch.save(network, path)
        return path, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    path = folder / "network.pt2"
    torch.export.save(program, path)
    return path, None


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
