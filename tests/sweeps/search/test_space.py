import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import TypeAdapter, ValidationError
from scipy import stats

from caviar.sweeps.search.params import Param
from caviar.sweeps.search.space import SearchSpace

parse = TypeAdapter(Param).validate_python


@pytest.mark.parametrize(
    ("raw", "name", "distribution"),
    [
        ({"scale": "log", "low": 1e-4, "high": 1.0}, "lr", FloatDistribution(1e-4, 1.0, log=True)),
        (
            {"scale": "log1m", "low": 0.9, "high": 0.999},
            "1-momentum",
            FloatDistribution(1 - 0.999, 1 - 0.9, log=True),
        ),
        ({"scale": "linear", "low": 0.0, "high": 0.5}, "lr", FloatDistribution(0.0, 0.5)),
        (
            {"scale": "int", "low": 32, "high": 512, "log": True},
            "lr",
            IntDistribution(32, 512, log=True),
        ),
        ({"scale": "int", "low": 1, "high": 4}, "lr", IntDistribution(1, 4)),
        ({"choices": [32, 64]}, "lr", CategoricalDistribution([32, 64])),
    ],
)
def test_scales_map_to_optuna_distributions(raw, name, distribution):
    hyper = "momentum" if raw.get("scale") == "log1m" else "lr"
    space = SearchSpace({hyper: parse(raw)})
    assert space.distributions() == {name: distribution}


def _sample(space: SearchSpace, n: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.to_values(study.ask(space.distributions()).params) for _ in range(n)]


def test_log1m_samples_are_even_in_log_of_one_minus_x():
    space = SearchSpace({"momentum": parse({"scale": "log1m", "low": 0.9, "high": 0.999})})
    betas = np.array([v["momentum"] for v in _sample(space, 2000)])
    assert betas.min() >= 0.9 and betas.max() <= 0.999
    r = np.log10(1 - betas)  # should be uniform on [-3, -1]
    assert stats.kstest(r, stats.uniform(loc=-3, scale=2).cdf).pvalue > 0.01
    # Half the draws land in beta in [0.99, 0.999]; a linear scale would put 10% there.
    assert 0.45 < np.mean(betas > 0.99) < 0.55


def test_log_samples_are_even_per_decade():
    space = SearchSpace({"lr": parse({"scale": "log", "low": 1e-4, "high": 1.0})})
    rates = np.array([v["lr"] for v in _sample(space, 2000)])
    per_decade = np.histogram(np.log10(rates), bins=4, range=(-4, 0))[0] / len(rates)
    assert np.allclose(per_decade, 0.25, atol=0.04)


def test_values_round_trip_between_user_and_optuna_forms():
    space = SearchSpace(
        {
            "momentum": parse({"scale": "log1m", "low": 0.5, "high": 0.99}),
            "hidden_units": parse({"scale": "int", "low": 8, "high": 64}),
            "batch_size": parse({"choices": [32, 64]}),
        }
    )
    values = {"momentum": 0.95, "hidden_units": 16, "batch_size": 64}
    internal = space.to_optuna(values)
    assert internal["1-momentum"] == pytest.approx(0.05)
    back = space.to_values(internal)
    assert back["momentum"] == pytest.approx(0.95) and back["hidden_units"] == 16


def test_grid_points_follow_each_scale():
    space = SearchSpace(
        {
            "lr": parse({"scale": "log", "low": 1e-3, "high": 1e-1}),
            "momentum": parse({"scale": "log1m", "low": 0.9, "high": 0.999}),
            "layers": parse({"scale": "int", "low": 1, "high": 4}),
        }
    )
    grid = space.grid(3)
    assert grid["lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid["1-momentum"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid["layers"] == [1, 2, 4]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"scale": "log", "low": 0, "high": 1}, "greater than 0"),
        ({"scale": "log", "low": 1, "high": 0.1}, "low must not exceed high"),
        ({"scale": "log1m", "low": 0.9, "high": 1.0}, "less than 1"),
        ({"scale": "int", "low": 0, "high": 5, "log": True}, "needs low >= 1"),
        ({"scale": "cubic", "low": 0, "high": 1}, "expected `scale:`"),
        ({"choices": [1, 1]}, "distinct"),
    ],
)
def test_bad_ranges_are_refused(raw, problem):
    with pytest.raises(ValidationError, match=problem):
        parse(raw)


def test_int_grid_on_log_scale_is_integers():
    grid = parse({"scale": "int", "low": 32, "high": 512, "log": True}).grid(5)
    assert grid == [32, 64, 128, 256, 512]
    assert all(isinstance(v, int) for v in grid) and math.isclose(grid[2], 128)


def test_log_box_is_built_on_the_log_axis():
    lr = parse({"scale": "log", "low": 1e-4, "high": 1.0})
    box = lr.narrow([1e-3, 1e-2], margin=0.05)  # four decades: pad 0.2 decade each side
    assert math.log10(box.low) == pytest.approx(-3.2)
    assert math.log10(box.high) == pytest.approx(-1.8)


def test_log1m_box_is_built_on_log_of_one_minus_x():
    momentum = parse({"scale": "log1m", "low": 0.9, "high": 0.9999})
    box = momentum.narrow([1 - 0.99, 1 - 0.999], margin=0.05)  # Optuna form: 1 - beta
    assert math.log10(1 - box.high) == pytest.approx(-3.15)
    assert math.log10(1 - box.low) == pytest.approx(-1.85)
    assert 0.9 < box.low < 0.99 < 0.999 < box.high < 0.9999


def test_box_is_clipped_to_the_full_range_exactly():
    lr = parse({"scale": "log", "low": 1e-4, "high": 1.0})
    box = lr.narrow([1e-4, 0.5], margin=0.1)
    assert box.low == 1e-4 and box.high == 1.0


def test_values_outside_the_range_count_as_its_nearest_end():
    # Trials from before the user moved the range (a re-tune's champion, say).
    lr = parse({"scale": "log", "low": 0.05, "high": 1.0})
    box = lr.narrow([0.02, 0.01], margin=0.05)
    assert box.low == 0.05 and math.log10(box.high) == pytest.approx(
        math.log10(0.05) + 0.05 * math.log10(20)
    )
    width = parse({"scale": "int", "low": 64, "high": 512})
    assert width.narrow([600, 700], margin=0.0).low == 512


def test_a_range_widens_to_hold_values_from_outside_it():
    assert parse({"scale": "log", "low": 0.05, "high": 1.0}).holding([0.02]).bounds() == [0.02, 1]
    momentum = parse({"scale": "log1m", "low": 0.9, "high": 0.99})
    assert momentum.holding([1 - 0.999]).bounds() == [0.9, pytest.approx(0.999)]
    assert parse({"scale": "int", "low": 2, "high": 4}).holding([1, 3]).bounds() == [1, 4]
    # A log scale cannot hold 0 (a weight decay trained before it was searched): linear then.
    decay = parse({"scale": "log", "low": 1e-6, "high": 1e-2}).holding([0.0, 1e-3])
    assert decay.distribution() == FloatDistribution(0.0, 1e-2)
    sizes = parse({"choices": [64, 128]})
    assert sizes.holding([16, 64, 16]).choices == [64, 128, 16]
    assert sizes.holding([128]) is sizes


def test_int_box_rounds_outwards_and_stays_integer():
    width = parse({"scale": "int", "low": 16, "high": 1024, "log": True})
    box = width.narrow([100, 200], margin=0.02)
    assert isinstance(box.low, int) and isinstance(box.high, int)
    assert 16 < box.low <= 100 and 200 <= box.high < 1024
    layers = parse({"scale": "int", "low": 1, "high": 4}).narrow([2, 2], margin=0.1)
    assert (layers.low, layers.high) == (1, 3)


def test_categorical_keeps_the_choices_seen_among_the_best_in_order():
    sizes = parse({"choices": [32, 64, 128, 256]})
    assert sizes.narrow([256, 64, 64], margin=0.1).choices == [64, 256]


def test_pinned_parameters_stay_pinned():
    assert parse({"scale": "log", "low": 0.1, "high": 0.1}).narrow([0.1], 0.1).high == 0.1
    assert parse({"choices": ["adam"]}).narrow(["adam"], 0.1).choices == ["adam"]


def test_space_narrows_every_parameter_and_survives_a_round_trip():
    space = SearchSpace(
        {
            "lr": parse({"scale": "log", "low": 1e-4, "high": 1.0}),
            "momentum": parse({"scale": "log1m", "low": 0.5, "high": 0.999}),
            "batch_size": parse({"choices": [32, 64, 128]}),
        }
    )
    kept = [{"lr": 0.01, "1-momentum": 0.01, "batch_size": 64}]
    box = space.narrow(kept, margin=0.05)
    assert box.contains(kept[0]) and not box.contains(
        {"lr": 0.5, "1-momentum": 0.01, "batch_size": 64}
    )
    assert box.box()["batch_size"] == [64]
    assert SearchSpace.load(box.dump()).box() == box.box()
