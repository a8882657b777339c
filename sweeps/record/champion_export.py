"""The champion's MLflow model folder: a pyfunc model (`champion_model.py`, MLflow's models
from code) over the network exported with `torch.export`, its input columns and class labels.

Loading it needs torch, pandas and MLflow, not caviar. Its signature names the input columns
with the source's own types (a CSV's integer column stays `long`), and the batch size is free.

The folder is built by a `ChampionBuilder` in a process of its own (a child of the driver at a
low CPU priority, or on the local cluster a process it keeps warm), which readies itself while
the sweep runs: torch, MLflow's pyfunc, pandas and `torch.export`'s first export take about
5 s of CPU, which would otherwise fall after the last trial. The driver never loads torch;
torch, MLflow's pyfunc and pandas are imported inside the functions for that reason.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caviar.models.data import Dataset

if TYPE_CHECKING:
    import pandas as pd
    import torch

MODEL_CODE = Path(__file__).with_name("champion_model.py")
# Saving the model runs on a worker, whose output Ray copies to the sweep's console: MLflow's
# download progress bars there are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class SavedChampion:
    model_dir: Path
    fallback: str | None  # why the network was pickled instead of exported, if it was


@dataclass(frozen=True)
class BuiltChampion:
    """A champion's MLflow model folder as a tar archive, and what was measured making it."""

    archive: bytes
    test_accuracy: float
    fallback: str | None  # why the network was pickled instead of exported, if it was
    package: str  # the package its modules come from (beyond torch and caviar)

    def unpack(self, folder: Path) -> Path:
        """Write the model folder under `folder`; returns its path."""
        with tarfile.open(fileobj=io.BytesIO(self.archive)) as archive:
            archive.extractall(folder, filter="data")
        return folder / "model"


def build_champion(
    data: Dataset, model: dict[str, Any], checkpoint: bytes, suffix: str
) -> BuiltChampion:
    """The deployable network of a checkpoint (`suffix` .npz, or .pt from older sweeps),
    scored on the test split and saved as an MLflow model. Runs on a worker."""
    import torch

    network = deployable_network(data, model, checkpoint, suffix)
    with torch.no_grad():
        probabilities = network(torch.from_numpy(data.raw(data.x_test)))
    accuracy = float((probabilities.argmax(dim=1).numpy() == data.y_test).mean())
    with tempfile.TemporaryDirectory() as folder:
        saved = save_champion(network, data, Path(folder))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(saved.model_dir, arcname="model")
    return BuiltChampion(buffer.getvalue(), accuracy, saved.fallback, defining_package(network))


class ChampionBuilder:
    """Builds champions' model folders; ready (`warm_up`) once constructed."""

    def __init__(self) -> None:
        try:
            warm_up()
        except Exception:  # only a head start: the real build says what is wrong, if anything
            logging.getLogger(__name__).warning(
                "readying the champion's build failed", exc_info=True
            )

    def build(
        self, data: Dataset, model: dict[str, Any], checkpoint: bytes, suffix: str
    ) -> BuiltChampion:
        return build_champion(data, model, checkpoint, suffix)


def warm_up() -> None:
    """Build the champion of a tiny network on a tiny data set, so that everything building
    one needs is imported and run once (torch, MLflow's pyfunc, pandas, `torch.export`'s
    first export: about 5 s of CPU) and a real champion then takes a fraction of a second."""
    from caviar.models.families import build_network, model_config

    rows, columns = 5, ("a", "b", "c")
    data = Dataset(
        x_train=np.zeros((0, len(columns)), np.float32), y_train=np.zeros(0, np.int64),
        x_val=np.zeros((0, len(columns)), np.float32), y_val=np.zeros(0, np.int64),
        x_test=np.zeros((rows, len(columns)), np.float32), y_test=np.zeros(rows, np.int64),
        classes=("x", "y"), mean=np.zeros(len(columns)), std=np.ones(len(columns)),
        features=columns, feature_types=("float64", "int64", "bool"),
    )  # fmt: skip
    model = {"family": "mlp", "hidden_units": 4, "layers": 1}
    network = build_network(len(columns), len(data.classes), model_config(model))
    weights = {name: value.detach().numpy() for name, value in network.state_dict().items()}
    build_champion(data, model, checkpoint_bytes(model, weights), ".npz")


def export_view(data: Dataset) -> Dataset:
    """What building the champion reads of `data`: its test split and the columns' scaling,
    names and types (the training and validation rows stay behind)."""
    return replace(
        data,
        x_train=data.x_train[:0], y_train=data.y_train[:0],
        x_val=data.x_val[:0], y_val=data.y_val[:0],
    )  # fmt: skip


def deployable_network(
    data: Dataset, model: dict[str, Any], checkpoint: bytes, suffix: str
) -> torch.nn.Module:
    """Raw inputs -> class probabilities, with the checkpoint's weights."""
    import torch

    from caviar.models.families import build_network, model_config
    from caviar.models.net import deployable

    if suffix == ".pt":  # sweeps from before checkpoints were NumPy archives
        weights = torch.load(io.BytesIO(checkpoint), weights_only=True)["weights"]
    else:
        with np.load(io.BytesIO(checkpoint)) as saved:
            weights = {k[2:]: torch.from_numpy(saved[k]) for k in saved.files if k[:2] == "w/"}
    network = build_network(data.n_features, data.n_classes, model_config(model))
    network.load_state_dict(weights)
    return deployable(network, torch.tensor(data.mean), torch.tensor(data.std))


def checkpoint_bytes(model: dict[str, Any], weights: dict[str, np.ndarray]) -> bytes:
    """A checkpoint: the model's config and its weights, as one NumPy archive (.npz)."""
    buffer = io.BytesIO()
    arrays = {f"w/{name}": np.asarray(value) for name, value in weights.items()}
    np.savez(buffer, model=np.array(json.dumps(model)), **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def defining_package(network: torch.nn.Module) -> str:
    """The package whose modules the network is made of (beyond torch and caviar)."""
    for module in network.modules():
        package = type(module).__module__.split(".")[0]
        if package not in ("torch", "caviar"):
            return package
    return "torch"


def _quiet_mlflow() -> None:
    # MLflow says at INFO that it checks the input example against the signature; the sweep's
    # progress is the place for what matters to a user.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    import mlflow.pyfunc  # noqa: F401


def save_champion(network: torch.nn.Module, data: Dataset, folder: Path) -> SavedChampion:
    """Write the MLflow model of `network` (raw inputs -> class probabilities, in eval mode)
    under `folder`. The network is exported with `torch.export`; one it cannot capture (a
    plugin's data-dependent control flow, say) is saved pickled instead, which loads only
    where the package that defines it is installed."""
    import mlflow.pyfunc
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    _quiet_mlflow()
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
    import torch

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
    import pandas as pd

    raw = (x.astype(np.float64) * data.std + data.mean).astype(np.float64)
    frame = pd.DataFrame(raw, columns=list(data.features))
    for name, kind in zip(data.features, data.feature_types, strict=True):
        if np.dtype(kind).kind in "iu":
            frame[name] = np.rint(frame[name]).astype(kind)
        elif np.dtype(kind).kind == "b":
            frame[name] = frame[name] > 0.5
    return frame
