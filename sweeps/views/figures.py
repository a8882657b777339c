"""The report's figures, one function per section; each returns a plotly figure, or a sentence
saying why there is none yet."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from caviar.sweeps.search.choice_param import ChoiceParam
from caviar.sweeps.search.direction import Direction
from caviar.sweeps.search.params import Log1mParam, LogParam
from caviar.sweeps.search.space import SearchSpace
from caviar.sweeps.views.sweep_trials import StageTrials

STAGE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def colour(i: int) -> str:
    return STAGE_COLOURS[i % len(STAGE_COLOURS)]


def history(stages: list[StageTrials], metric: str, direction: Direction) -> go.Figure | str:
    """The objective of every finished trial in the order they finished, coloured by stage,
    with the best-so-far line."""
    ordered = sorted(
        (
            (s.name, t)
            for s in stages
            for t in s.trials
            if t.state in _FINISHED and t.value is not None
        ),
        key=lambda pair: pair[1].datetime_complete or datetime.max,
    )
    if not ordered:
        return "No finished trials yet."
    figure = go.Figure()
    for i, stage in enumerate(stages):
        for state, symbol in ((TrialState.COMPLETE, "circle"), (TrialState.PRUNED, "x")):
            points = [
                (n, t) for n, (name, t) in enumerate(ordered) if name == stage.name
                and t.state is state
            ]  # fmt: skip
            if points:
                figure.add_scatter(
                    x=[n for n, _ in points], y=[t.value for _, t in points], mode="markers",
                    marker={"color": colour(i), "symbol": symbol, "size": 8},
                    name=f"{stage.name} · {state.name.lower()}",
                    text=[f"trial {t.number}" for _, t in points],
                )  # fmt: skip
    figure.add_scatter(
        y=_best_so_far(ordered, direction), mode="lines", name="best so far",
        line={"color": "black"},
    )  # fmt: skip
    figure.update_layout(
        xaxis_title="trial (order finished)",
        yaxis_title=metric + " (pruned: at the epoch stopped)",
        height=420,
    )
    return figure


def _best_so_far(ordered: list[tuple[str, FrozenTrial]], direction: Direction) -> list[Any]:
    best: float | None = None
    line = []
    for _, t in ordered:
        if (
            t.state is TrialState.COMPLETE
            and t.value is not None
            and direction.better(t.value, best)
        ):
            best = t.value
        line.append(best)
    return line


def boxes(full: SearchSpace, stages: list[StageTrials], metric: str) -> go.Figure | str:
    """Every stage's box drawn over the trials, in learning rate x (1 - momentum)."""
    axes = _axis_params(full)
    if axes is None:
        return "The box plot needs two numeric hyperparameters in the space."
    x, y = axes
    figure = go.Figure()
    _trial_points(figure, full, stages, (x, y), metric)
    for i, stage in enumerate(stages):
        box = stage.space.box()
        xs = sorted(_axis_value(full, x, b) for b in box[x])
        ys = sorted(_axis_value(full, y, b) for b in box[y])
        figure.add_shape(
            type="rect", x0=xs[0], x1=xs[1], y0=ys[0], y1=ys[1],
            line={"color": colour(i), "width": 2, "dash": "solid" if i == 0 else "dash"},
        )  # fmt: skip
        figure.add_scatter(
            x=[xs[0]], y=[ys[1]], mode="text", text=[f"{stage.name} box"],
            textposition="bottom right", textfont={"color": colour(i)}, showlegend=False,
        )  # fmt: skip
    for axis, name in ((figure.update_xaxes, x), (figure.update_yaxes, y)):
        axis(type="log" if _log_scaled(full, name) else "linear", title=_axis_title(full, name))
    figure.update_layout(height=520, showlegend=False)
    return figure


def _trial_points(
    figure: go.Figure,
    full: SearchSpace,
    stages: list[StageTrials],
    axes: tuple[str, str],
    metric: str,
) -> None:
    x, y = axes
    values = [
        (i, t, full.to_values(t.params))
        for i, s in enumerate(stages)
        for t in s.trials
        if t.state in _FINISHED
    ]
    if not values:
        return
    figure.add_scatter(
        x=[_axis_value(full, x, v[x]) for _, _, v in values],
        y=[_axis_value(full, y, v[y]) for _, _, v in values],
        mode="markers",
        marker={
            "color": [t.value for _, t, _ in values],
            "colorscale": "Viridis",
            "colorbar": {"title": metric},
            "symbol": ["circle" if t.state is TrialState.COMPLETE else "x" for _, t, _ in values],
            "size": 9,
            "line": {"color": [colour(i) for i, _, _ in values], "width": 1.5},
        },
        text=[f"{stages[i].name} #{t.number}" for i, t, _ in values],
        name="trials",
    )


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


def _axis_title(space: SearchSpace, name: str) -> str:
    return f"1 - {name}" if isinstance(space.params[name], Log1mParam) else name


def _log_scaled(space: SearchSpace, name: str) -> bool:
    param = space.params[name]
    return isinstance(param, LogParam | Log1mParam) or bool(getattr(param, "log", False))


def parallel(merged: optuna.Study) -> go.Figure | str:
    if not merged.get_trials(states=(TrialState.COMPLETE,)):
        return "No complete trials yet."
    return optuna.visualization.plot_parallel_coordinate(merged)


def importances(merged: optuna.Study) -> go.Figure | str:
    complete = merged.get_trials(states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return f"Importances need at least 3 complete trials; this sweep has {len(complete)}."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.visualization.plot_param_importances(merged, evaluator=evaluator)


def curves(
    stages: list[StageTrials], metric: str, direction: Direction, top: int = 5
) -> go.Figure | str:
    """Learning curves of the `top` complete trials; pruned trials in grey up to where they
    were stopped."""
    trials = [(i, t) for i, s in enumerate(stages) for t in s.trials if t.intermediate_values]
    if not trials:
        return "No epochs reported yet."
    complete = [(i, t) for i, t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda pair: direction.rank(float(pair[1].value or 0.0)))
    figure = go.Figure()
    for i, t in trials:
        if t.state is TrialState.PRUNED:
            steps = sorted(t.intermediate_values)
            figure.add_scatter(
                x=steps, y=[t.intermediate_values[s] for s in steps], mode="lines+markers",
                line={"color": "rgba(140,140,140,0.45)", "width": 1},
                marker={"symbol": ["circle"] * (len(steps) - 1) + ["x"],
                        "size": [0] * (len(steps) - 1) + [8]},
                name=f"{stages[i].name} #{t.number} pruned", showlegend=False,
            )  # fmt: skip
    for i, t in complete[:top]:
        steps = sorted(t.intermediate_values)
        figure.add_scatter(
            x=steps, y=[t.intermediate_values[s] for s in steps], mode="lines",
            line={"color": colour(i), "width": 2.5},
            name=f"{stages[i].name} #{t.number} ({t.value:.4f})",
        )  # fmt: skip
    figure.update_layout(
        xaxis_title="epoch", yaxis_title=metric, height=460,
        title=f"top {min(top, len(complete))} complete trials; grey: pruned, × where stopped",
    )  # fmt: skip
    return figure
