"""Reading a spec file: YAML in, a `SweepSpec` out, or one `SpecError` line per problem naming
the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from caviar.models.data import FileSource
from caviar.sweeps.errors import SpecError
from caviar.sweeps.search.params import SCALE_TAGS
from caviar.sweeps.search.spec import SweepSpec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; relative data paths are resolved against its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found; expected a sweep spec (YAML)") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; expected a sweep spec (YAML)") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: byte {exc.start} is not UTF-8 text; expected a sweep spec (YAML)"
        ) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: {line}not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of spec fields, got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(path, exc)) from None
    spec._folder = path.parent.resolve()
    spec.data = _resolve_path(spec.data, path.parent)
    if spec.retune.data is not None:
        spec.retune.data = _resolve_path(spec.retune.data, path.parent)
    return spec


def _resolve_path(data: Any, folder: Path) -> Any:
    """A file source's relative path is relative to the spec's folder."""
    if isinstance(data, FileSource) and not data.path.is_absolute():
        return data.model_copy(update={"path": (folder / data.path).resolve()})
    return data


def _describe(path: Path, exc: ValidationError) -> str:
    """One line per problem: `file: field.path: what was expected (got value)`."""
    lines = []
    for error in exc.errors():
        field = _field_path(error["loc"])
        if error["type"] == "extra_forbidden":
            problem = "unknown field; check its spelling and section"
        elif error["type"] == "missing":
            problem = "required field is missing"
        else:
            problem = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            if not isinstance(given, dict | list) and given is not None:
                problem += f" (got {given!r})"
        lines.append(f"{path}: {field}: {problem}" if field else f"{path}: {problem}")
    return "\n".join(lines)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, key in enumerate(loc):
        # Tagged unions add their tag to the location (data.mnist1d.samples); drop it.
        tagged = (
            (i == 1 and loc[0] == "data")
            or (i == 2 and loc[:2] == ("retune", "data"))
            or (i == 2 and loc[0] == "space" and key in SCALE_TAGS)
        )
        if tagged:
            continue
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(parts).lstrip(".")
