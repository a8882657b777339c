"""Reading a spec file: YAML in, a `SweepSpec` out, or one `SpecError` line per problem naming
the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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
    return spec_from_dict(raw, path.parent, origin=str(path))


def spec_from_dict(raw: dict[str, Any], folder: Path, origin: str = "spec") -> SweepSpec:
    """Validate a spec given as a mapping; relative data paths are relative to `folder`.
    `origin` names it in errors (the file, or "spec")."""
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(origin, exc)) from None
    spec._folder = folder.resolve()
    spec.data = _resolve_path(spec.data, folder)
    if spec.retune.data is not None:
        spec.retune.data = _resolve_path(spec.retune.data, folder)
    return spec


def _resolve_path(data: Any, folder: Path) -> Any:
    """A file source's (or any source's) relative `path` is relative to the spec's folder."""
    path = getattr(data, "path", None)
    if isinstance(path, Path) and not path.is_absolute():
        return data.model_copy(update={"path": (folder / path).resolve()})
    return data


def _describe(path: Path | str, exc: ValidationError) -> str:
    """One line per problem: `file: field.path: what was expected (got value)`."""
    lines = []
    for error in exc.errors():
        field = _field_path(error["loc"])
        if error["type"] == "union_tag_invalid":
            field, problem = _unregistered(field, error.get("ctx", {}))
        elif error["type"] == "extra_forbidden":
            problem = "unknown field; check its spelling and section"
        elif error["type"] == "missing":
            problem = "required field is missing"
        else:
            problem = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            if not isinstance(given, dict | list) and given is not None and "got " not in problem:
                problem += f" (got {given!r})"
        lines.append(f"{path}: {field}: {problem}" if field else f"{path}: {problem}")
    return "\n".join(lines)


def _unregistered(field: str, ctx: dict[str, Any]) -> tuple[str, str]:
    """A model family or data source that no installed package registered."""
    tag = ctx.get("discriminator", "").strip("'")
    kind = {"family": "model family", "source": "data source"}.get(tag, tag)
    return f"{field}.{tag}", (
        f"{ctx.get('tag')!r} is not a registered {kind}; expected one of "
        f"{ctx.get('expected_tags')} (`caviar plugins` lists them and where they come from)"
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, key in enumerate(loc):
        # Tagged unions add their tag to the location (data.mnist1d.samples); drop it.
        tagged = (
            (i == 1 and loc[0] in ("data", "model"))
            or (i == 2 and loc[:2] == ("retune", "data"))
            or (i == 2 and loc[0] == "space" and key in SCALE_TAGS)
        )
        if tagged:
            continue
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(parts).lstrip(".")
