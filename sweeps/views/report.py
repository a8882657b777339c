"""`caviar report`: one self-contained HTML page about a sweep, built from its Optuna studies.

What it shows: the objective over trials coloured by stage with the best-so-far line; each
stage's box drawn over the trials in learning rate x (1 - momentum), both on log axes; parallel
coordinates; fANOVA hyperparameter importances; learning curves of the best trials with pruned
trials drawn up to the epoch where they were stopped (the figures are in `figures`).
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

import plotly.graph_objects as go

from caviar.sweeps.search.ranking import sweep_best
from caviar.sweeps.search.select import SELECTION
from caviar.sweeps.search.space import format_box
from caviar.sweeps.search.spec import SweepSpec
from caviar.sweeps.search.studies import count_states
from caviar.sweeps.views import figures
from caviar.sweeps.views.status import selection_summary
from caviar.sweeps.views.sweep_trials import StageTrials, merged_study, sweep_space


def report_sections(spec: SweepSpec, stages: list[StageTrials]) -> dict[str, go.Figure | str]:
    """Section title -> its figure, or a sentence saying why there is none yet."""
    direction = spec.objective.direction
    assert direction is not None
    metric = spec.objective.metric
    merged = merged_study(spec, stages)
    return {
        "Objective over trials": figures.history(stages, metric, direction),
        "Coarse-to-fine boxes": figures.boxes(sweep_space(spec, stages), stages, metric),
        "Parallel coordinates": figures.parallel(merged),
        "Hyperparameter importances (fANOVA)": figures.importances(merged),
        "Learning curves": figures.curves(stages, metric, direction),
    }


def build_report(spec: SweepSpec, stages: list[StageTrials]) -> str:
    """The whole page as one HTML string (plotly.js inlined once; no network needed)."""
    parts = [_header(spec, stages, spec.objective.metric)]
    inline_js: bool | str = "inline"
    for title, content in report_sections(spec, stages).items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, str):
            parts.append(f"<p class='note'>{html.escape(content)}</p>")
        else:
            parts.append(content.to_html(full_html=False, include_plotlyjs=inline_js))
            inline_js = False
    return _PAGE.format(title=html.escape(f"caviar · {spec.name}"), body="\n".join(parts))


def _header(spec: SweepSpec, stages: list[StageTrials], metric: str) -> str:
    rows = []
    for stage in stages:
        counts = count_states(stage.trials)
        cells = (stage.name, stage.budget, counts["complete"], counts["pruned"],
                 counts["failed"], format_box(stage.space.box(), "; "))  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>")
    assert spec.objective.direction is not None
    recorded = stages[0].attrs.get(SELECTION) if stages else None
    best = sweep_best(
        [(s.name, s.trials) for s in stages],
        spec.objective.direction,
        recorded and recorded["winner"],
    )
    if best is not None:
        label, trial = best
        values = sweep_space(spec, stages).to_values(trial.params)
        shown = ", ".join(f"{k} = {_short(v)}" for k, v in values.items())
        best_line = (
            f"<p><b>Best {metric}: {trial.value:.4f}</b> (trial {html.escape(label)}) — "
            f"{html.escape(shown)}</p>" + _selection_table(selection_summary(recorded), metric)
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


def _selection_table(summary: dict[str, Any] | None, metric: str) -> str:
    """Each contender of the seed-robust selection: mean ± sd over its seeds."""
    if summary is None or len(summary["seeds"]) < 2:
        return ""
    winner = summary["winner"]
    rows = "".join(
        f"<tr><td>{html.escape(c['trial'])}{' (champion)' if c['trial'] == winner else ''}"
        f"</td><td>{c['mean']:.4f} ± {c['sd']:.4f}</td>"
        f"<td>{html.escape(', '.join(f'{s:.4f}' for s in c['scores']))}</td></tr>"
        for c in summary["contenders"]
    )
    return (
        f"<p>Chosen by the mean {metric} over seeds {summary['seeds']}:</p>"
        f"<table><tr><th>trial</th><th>mean ± sd</th><th>per seed</th></tr>{rows}</table>"
    )


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
