"""`caviar report`: one self-contained HTML page about a sweep, built from its Optuna studies.

What it shows: the objective over trials coloured by stage with the best-so-far line; each
stage's box drawn over the trials in learning rate x (1 - momentum), both on log axes; parallel
coordinates; fANOVA hyperparameter importances; learning curves of the best trials with pruned
trials drawn up to the epoch where they were stopped.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from sweeps.space import ChoiceParam, Log1mParam, LogParam, SearchSpace, format_box
from sweeps.spec import SweepSpec
from sweeps.studies import SPACE, count_states, own_trials, read_stages

_STAGE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


@dataclass(frozen=True)
class StageTrials:
    name: str
    budget: int
    space: SearchSpace
    trials: list[FrozenTrial]  # the stage's own trials, carried copies left out


def load_stages(spec: SweepSpec, storage_url: str) -> list[StageTrials]:
    """The stages that have started, with their boxes and own trials."""
    stages = []
    studies = read_stages(storage_url, spec.name, [stage.name for stage in spec.stages])
    for stage, (_, study) in zip(spec.stages, studies, strict=True):
        if study is None:
            break
        recorded = study.user_attrs.get(SPACE)
        space = SearchSpace.load(recorded) if recorded else spec.search_space
        stages.append(StageTrials(stage.name, stage.trials, space, own_trials(study.get_trials())))
    return stages


def report_sections(spec: SweepSpec, stages: list[StageTrials]) -> dict[str, go.Figure | str]:
    """Section title -> its figure, or a sentence saying why there is none yet."""
    maximize = spec.objective.direction == "maximize"
    metric = spec.objective.metric
    merged = _merged_study(spec, stages)
    return {
        "Objective over trials": _history(stages, metric, maximize),
        "Coarse-to-fine boxes": _boxes(spec, stages, metric),
        "Parallel coordinates": _parallel(merged),
        "Hyperparameter importances (fANOVA)": _importances(merged),
        "Learning curves": _curves(stages, metric, maximize),
    }


def build_report(spec: SweepSpec, stages: list[StageTrials]) -> str:
    """The whole page as one HTML string (plotly.js inlined once; no network needed)."""
    parts = [_header(spec, stages, _merged_study(spec, stages), spec.objective.metric)]
    inline_js: bool | str = "inline"
    for title, content in report_sections(spec, stages).items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, str):
            parts.append(f"<p class='note'>{html.escape(content)}</p>")
        else:
            parts.append(content.to_html(full_html=False, include_plotlyjs=inline_js))
            inline_js = False
    return _PAGE.format(title=html.escape(f"caviar · {spec.name}"), body="\n".join(parts))


def _merged_study(spec: SweepSpec, stages: list[StageTrials]) -> optuna.Study:
    """All stages' own trials in one in-memory study, over the full space's distributions."""
    study = optuna.create_study(direction=spec.objective.direction or "maximize")
    full = spec.search_space.distributions()
    for stage in stages:
        for t in stage.trials:
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                continue
            study.add_trial(
                optuna.trial.create_trial(
                    state=t.state,
                    value=t.value if t.state is TrialState.COMPLETE else None,
                    params=t.params,
                    distributions={k: full[k] for k in t.params if k in full},
                    intermediate_values=dict(t.intermediate_values),
                    user_attrs={"stage": stage.name},
                )
            )
    return study


def _header(spec: SweepSpec, stages: list[StageTrials], merged: optuna.Study, metric: str) -> str:
    rows = []
    for stage in stages:
        counts = count_states(stage.trials)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    stage.name,
                    stage.budget,
                    counts["complete"],
                    counts["pruned"],
                    counts["failed"],
                    format_box(stage.space.box(), "; "),
                )
            )
            + "</tr>"
        )
    complete = merged.get_trials(states=(TrialState.COMPLETE,))
    if complete:
        best = merged.best_trial
        values = spec.search_space.to_values(best.params)
        shown = ", ".join(f"{k} = {_short(v)}" for k, v in values.items())
        best_line = (
            f"<p><b>Best {metric}: {best.value:.4f}</b> "
            f"({html.escape(best.user_attrs['stage'])}) — {html.escape(shown)}</p>"
        )
    else:
        best_line = "<p>No trial has completed yet.</p>"
    return (
        f"<h1>Sweep {html.escape(spec.name)}</h1>"
        f"<p class='note'>{html.escape(spec.data.source)} data · objective: "
        f"{spec.objective.direction} {metric} · written {datetime.now():%Y-%m-%d %H:%M}</p>"
        + best_line
        + "<table><tr><th>stage</th><th>budget</th><th>complete</th><th>pruned</th>"
        "<th>failed</th><th>box</th></tr>" + "".join(rows) + "</table>"
    )


def _ordered(stages: list[StageTrials]) -> list[tuple[str, FrozenTrial]]:
    finished = [
        (s.name, t)
        for s in stages
        for t in s.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.value is not None
    ]
    return sorted(finished, key=lambda pair: pair[1].datetime_complete or datetime.max)


def _history(stages: list[StageTrials], metric: str, maximize: bool) -> go.Figure | str:
    ordered = _ordered(stages)
    if not ordered:
        return "No finished trials yet."
    figure = go.Figure()
    for i, stage in enumerate(stages):
        for state, symbol in ((TrialState.COMPLETE, "circle"), (TrialState.PRUNED, "x")):
            points = [
                (n, t)
                for n, (name, t) in enumerate(ordered)
                if name == stage.name and t.state is state
            ]
            if points:
                figure.add_scatter(
                    x=[n for n, _ in points],
                    y=[t.value for _, t in points],
                    mode="markers",
                    marker={"color": _colour(i), "symbol": symbol, "size": 8},
                    name=f"{stage.name} · {state.name.lower()}",
                    text=[f"trial {t.number}" for _, t in points],
                )
    best, line = None, []
    for _, t in ordered:
        if t.state is TrialState.COMPLETE:
            assert t.value is not None
            better = best is None or (t.value > best if maximize else t.value < best)
            best = t.value if better else best
        line.append(best)
    figure.add_scatter(y=line, mode="lines", name="best so far", line={"color": "black"})
    figure.update_layout(
        xaxis_title="trial (order finished)",
        yaxis_title=metric + " (pruned: at the epoch stopped)",
        height=420,
    )
    return figure


def _axis_params(space: SearchSpace) -> tuple[str, str] | None:
    """Learning rate x momentum when the spec searches both; else the first two log-scaled."""
    numeric = [n for n, p in space.params.items() if not isinstance(p, ChoiceParam)]
    log1m = [n for n, p in space.params.items() if isinstance(p, Log1mParam)]
    x = "lr" if "lr" in numeric else next((n for n in numeric if n not in log1m), None)
    y = log1m[0] if log1m else next((n for n in numeric if n != x), None)
    return (x, y) if x and y else None


def _axis_value(space: SearchSpace, name: str, value: float) -> float:
    """Where a user-form value sits on the plot: 1-x for log1m parameters."""
    return 1.0 - value if isinstance(space.params[name], Log1mParam) else value


def _boxes(spec: SweepSpec, stages: list[StageTrials], metric: str) -> go.Figure | str:
    full = spec.search_space
    axes = _axis_params(full)
    if axes is None:
        return "The box plot needs two numeric hyperparameters in the space."
    x, y = axes
    figure = go.Figure()
    values = [
        (i, t, full.to_values(t.params))
        for i, s in enumerate(stages)
        for t in s.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if values:
        figure.add_scatter(
            x=[_axis_value(full, x, v[x]) for _, _, v in values],
            y=[_axis_value(full, y, v[y]) for _, _, v in values],
            mode="markers",
            marker={
                "color": [t.value for _, t, _ in values],
                "colorscale": "Viridis",
                "colorbar": {"title": metric},
                "symbol": [
                    "circle" if t.state is TrialState.COMPLETE else "x" for _, t, _ in values
                ],
                "size": 9,
                "line": {"color": [_colour(i) for i, _, _ in values], "width": 1.5},
            },
            text=[f"{stages[i].name} #{t.number}" for i, t, _ in values],
            name="trials",
        )
    for i, stage in enumerate(stages):
        bx, by = stage.space.box()[x], stage.space.box()[y]
        xs = sorted(_axis_value(full, x, b) for b in bx)
        ys = sorted(_axis_value(full, y, b) for b in by)
        figure.add_shape(
            type="rect",
            x0=xs[0],
            x1=xs[1],
            y0=ys[0],
            y1=ys[1],
            line={"color": _colour(i), "width": 2, "dash": "solid" if i == 0 else "dash"},
        )
        figure.add_scatter(
            x=[xs[0]],
            y=[ys[1]],
            mode="text",
            text=[f"{stage.name} box"],
            textposition="bottom right",
            textfont={"color": _colour(i)},
            showlegend=False,
        )
    log_x = isinstance(full.params[x], LogParam | Log1mParam) or getattr(
        full.params[x], "log", False
    )
    log_y = isinstance(full.params[y], LogParam | Log1mParam) or getattr(
        full.params[y], "log", False
    )
    figure.update_xaxes(type="log" if log_x else "linear", title=_axis_title(full, x))
    figure.update_yaxes(type="log" if log_y else "linear", title=_axis_title(full, y))
    figure.update_layout(height=520, showlegend=False)
    return figure


def _axis_title(space: SearchSpace, name: str) -> str:
    return f"1 - {name}" if isinstance(space.params[name], Log1mParam) else name


def _parallel(merged: optuna.Study) -> go.Figure | str:
    if not merged.get_trials(states=(TrialState.COMPLETE,)):
        return "No complete trials yet."
    return optuna.visualization.plot_parallel_coordinate(merged)


def _importances(merged: optuna.Study) -> go.Figure | str:
    complete = merged.get_trials(states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return f"Importances need at least 3 complete trials; this sweep has {len(complete)}."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.visualization.plot_param_importances(merged, evaluator=evaluator)


def _curves(
    stages: list[StageTrials], metric: str, maximize: bool, top: int = 5
) -> go.Figure | str:
    trials = [(i, t) for i, s in enumerate(stages) for t in s.trials if t.intermediate_values]
    if not trials:
        return "No epochs reported yet."
    complete = [(i, t) for i, t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda pair: float(pair[1].value or 0.0), reverse=maximize)
    figure = go.Figure()
    for i, t in trials:
        if t.state is TrialState.PRUNED:
            steps = sorted(t.intermediate_values)
            figure.add_scatter(
                x=steps,
                y=[t.intermediate_values[s] for s in steps],
                mode="lines+markers",
                line={"color": "rgba(140,140,140,0.45)", "width": 1},
                marker={
                    "symbol": ["circle"] * (len(steps) - 1) + ["x"],
                    "size": [0] * (len(steps) - 1) + [8],
                },
                name=f"{stages[i].name} #{t.number} pruned",
                showlegend=False,
            )
    for i, t in complete[:top]:
        steps = sorted(t.intermediate_values)
        figure.add_scatter(
            x=steps,
            y=[t.intermediate_values[s] for s in steps],
            mode="lines",
            line={"color": _colour(i), "width": 2.5},
            name=f"{stages[i].name} #{t.number} ({t.value:.4f})",
        )
    figure.update_layout(
        xaxis_title="epoch",
        yaxis_title=metric,
        height=460,
        title=f"top {min(top, len(complete))} complete trials; grey: pruned, × where stopped",
    )
    return figure


def _colour(i: int) -> str:
    return _STAGE_COLOURS[i % len(_STAGE_COLOURS)]


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
.note {{ color: #666; }}
</style></head>
<body>
{body}
</body></html>
"""
