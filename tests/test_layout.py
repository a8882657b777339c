"""How caviar installs and how its code is laid out.

A user's project with its own `models/` (the most common layout in ML code), `sweeps/` or
`cluster/` package must run sweeps: caviar installs one import name, `caviar`, and nothing
else. The size limits keep each module readable in one sitting (see ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CAVIAR, spec_dict, write_spec

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "sweeps", "cluster")
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 300, 200, 40


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _too_long(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_modules_classes_and_functions_stay_small():
    long_modules = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    long_defs = [entry for p in _modules() for entry in _too_long(p)]
    assert not long_defs, f"classes over {MAX_CLASS_LINES} / functions over 40: {long_defs}"


def test_the_executor_boundary_imports_no_torch_and_no_training_code():
    code = (
        "import sys; import caviar.models.executor; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('torch', 'caviar')))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.startswith("torch")], loaded
    assert not {"caviar.models.train", "caviar.models.net"} & set(loaded)


def test_the_driver_process_imports_neither_torch_nor_mlflow_to_start_a_sweep():
    """torch loads in the workers and MLflow in the writer thread, not before the first trial."""
    code = (
        "import sys, json; import caviar.sweeps.launch; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"torch", "mlflow"} & set(json.loads(done.stdout))


@pytest.mark.slow
def test_the_wheel_installs_only_the_caviar_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "runs", "build", "*.egg-info")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("caviar-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"caviar", wheel.name.split("-py")[0]
                                                      + ".dist-info"}  # fmt: skip
    for package in PACKAGES:
        assert f"caviar/{package}/__init__.py" in names
    assert "caviar/sweeps/specs/quick.yaml" in names
    assert not [n for n in names if n.startswith(("caviar/tests", "caviar/bench"))]


@pytest.mark.slow
def test_a_sweep_runs_from_a_project_with_its_own_models_sweeps_and_cluster(tmp_path):
    project = tmp_path / "project"
    for package in PACKAGES:
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(
            f"raise ImportError('the project\\'s own {package} package was imported')\n"
        )
    spec = spec_dict(stages=[{"name": "search", "trials": 3}], train={"epochs": 2})
    write_spec(project, spec)
    # The project is on the path of the driver (as in a notebook or `python train.py`) and,
    # through Ray, of every worker.
    env = {**os.environ, "PYTHONPATH": str(project)}
    done = subprocess.run(
        [CAVIAR, "sweep", "spec.yaml", "--run-dir", "runs"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    status = subprocess.run(
        [CAVIAR, "status", "spec.yaml", "--run-dir", "runs", "--json"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    trials = json.loads(status.stdout)["trials"]
    assert trials["complete"] + trials["pruned"] == 3 and trials["failed"] == 0, trials
