"""The champion as MLflow loads it: a self-contained pyfunc model (MLflow's models from code).

This file is copied into every champion's model folder and runs where the model is loaded; it
needs torch, pandas and MLflow, not caviar. Its artifacts are `network` (the trained network
with the training split's scaling and a softmax, exported by `torch.export` as `network.pt2`;
a network `torch.export` cannot capture is pickled as `network.pt`, and then loading needs the
package that defines it) and `meta` (the input columns in training order, the class labels,
the format).

`predict(frame)` takes a DataFrame with the named input columns in any order (extra columns
are ignored) and returns a DataFrame of class probabilities whose columns are the class labels;
with `params={"output": "label"}` it returns the predicted label per row instead. A row with a
missing or infinite input gets NaN probabilities and no label (missing); the other rows are
answered as usual.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel


class Champion(PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["meta"]) as handle:
            meta = json.load(handle)
        self.features: list[str] = meta["features"]
        self.classes: list[str] = meta["classes"]
        if meta.get("format", ".pt2") == ".pt2":  # exported by torch.export: any batch size
            self.network = torch.export.load(context.artifacts["network"]).module()
        else:  # pickled (torch.export could not capture it): needs its package installed
            self.network = torch.load(context.artifacts["network"], weights_only=False).eval()

    # A DataFrame hint tells MLflow to keep the model's own signature (named input columns,
    # class-label outputs) rather than derive one from the hints.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if set(self.features) <= set(frame.columns):
            frame = frame[self.features]  # by name, whatever order the caller used
        inputs = torch.from_numpy(np.ascontiguousarray(frame.to_numpy(dtype=np.float32)))
        with torch.no_grad():
            probabilities = self.network(inputs).numpy()
        result = pd.DataFrame(probabilities, columns=self.classes, index=frame.index)
        if (params or {}).get("output") == "label":
            # A row with a missing or infinite input has no probabilities, so no label.
            labels = pd.Series(None, index=result.index, dtype=object)
            known = result.notna().all(axis=1)
            labels[known] = result[known].idxmax(axis=1)
            return pd.DataFrame({"label": labels})
        return result


mlflow.models.set_model(Champion())
