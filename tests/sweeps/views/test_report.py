from caviar.sweeps.search.specfile import load_spec
from caviar.sweeps.search.studies import default_storage
from caviar.sweeps.views.report import build_report, report_sections
from caviar.sweeps.views.sweep_trials import load_stages
from tests.conftest import TWO_STAGES, spec_dict, write_spec

SECTIONS = [
    "Objective over trials",
    "Coarse-to-fine boxes",
    "Parallel coordinates",
    "Hyperparameter importances (fANOVA)",
    "Learning curves",
]


def _stages(swept):
    return swept.spec, load_stages(swept.spec, default_storage(swept.folder))


def test_report_is_one_self_contained_page_with_every_section(swept):
    page = build_report(*_stages(swept))
    assert page.startswith("<!doctype html>")
    assert "<script src=" not in page, "plotly.js is inlined: the page works offline"
    assert page.count("Plotly.newPlot") == len(SECTIONS)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "Best val_accuracy" in page


def test_box_plot_draws_each_stage_box_on_log_axes(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    figure = report_sections(*_stages(swept))["Coarse-to-fine boxes"]
    assert figure.layout.xaxis.type == "log" and figure.layout.yaxis.type == "log"
    assert figure.layout.yaxis.title.text == "1 - momentum"
    coarse_box, fine_box = [s for s in figure.layout.shapes if s.type == "rect"]
    assert (coarse_box.x0, coarse_box.x1) == (1e-4, 1.0)
    assert (coarse_box.y0, coarse_box.y1) == (1 - 0.99, 1 - 0.5)
    assert (fine_box.x0, fine_box.x1) == tuple(fine.user_attrs["box"]["lr"])
    assert coarse_box.x0 <= fine_box.x0 < fine_box.x1 <= coarse_box.x1
    own = [t for t in coarse.trials + fine.trials if "carried_from" not in t.user_attrs]
    finished = [t for t in own if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(figure.data[0].x) == len(finished)


def test_learning_curves_show_pruned_trials_up_to_where_they_stopped(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    curves = report_sections(*_stages(swept))["Learning curves"].data
    pruned = [t for t in coarse.trials + fine.trials if t.state.name == "PRUNED"]
    grey = [c for c in curves if c.name.endswith("pruned")]
    assert pruned and len(grey) == len(pruned)
    for line, trial in zip(grey, pruned, strict=True):
        assert max(line.x) == trial.last_step
    assert len([c for c in curves if not c.name.endswith("pruned")]) == 5


def test_history_marks_each_stage_and_the_best_so_far(swept):
    coarse, fine = swept.study("coarse"), swept.study("fine")
    figure = report_sections(*_stages(swept))["Objective over trials"]
    best_line = next(t for t in figure.data if t.name == "best so far")
    assert list(best_line.y) == sorted(best_line.y)  # maximize: never goes down
    complete = [t.value for t in coarse.trials + fine.trials if t.state.name == "COMPLETE"]
    assert best_line.y[-1] == max(complete)
    assert {t.name.split(" · ")[0] for t in figure.data if " · " in t.name} == {"coarse", "fine"}


def test_the_report_draws_the_sweep_as_it_ran_after_the_spec_moved_its_space(swept, tmp_path):
    """The user narrowed the learning rate and turned momentum's scale linear since: the
    report still draws every trial, over the spaces the stages recorded."""
    space = {
        "lr": {"scale": "log", "low": 1e-4, "high": 1e-3},
        "momentum": {"scale": "linear", "low": 0.5, "high": 0.99},
    }
    spec = load_spec(write_spec(tmp_path, spec_dict(stages=TWO_STAGES, space=space)))
    stages = load_stages(spec, default_storage(swept.folder))
    page = build_report(spec, stages)
    assert page.count("Plotly.newPlot") == len(SECTIONS)
    figure = report_sections(spec, stages)["Coarse-to-fine boxes"]
    assert figure.layout.yaxis.title.text == "1 - momentum", "the scale the sweep searched"
    finished = [t for s in stages for t in s.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(figure.data[0].x) == len(finished)
