import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import TypeAdapter, ValidationError
from scipy import stats

from sweeps.space import Param, SearchSpace

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
        ({"scale": "log", "low": 1, "high": 0.1}, "low must be below high"),
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
