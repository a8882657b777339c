"""Generated data sets are made once and read back; a torn or foreign file is made again."""

from __future__ import annotations

import numpy as np
import pytest

from caviar.models.cache import cache_folder, cached_table
from caviar.models.data import numeric_table
from caviar.models.sources import DigitsSource, Mnist1dSource, _generate_mnist1d


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting_maker():
    calls = []

    def make():
        calls.append(1)
        return numeric_table(np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3), prefix="f")

    return make, calls


def test_a_generated_table_is_made_once_and_read_back_equal(cache):
    spec = Mnist1dSource(source="mnist1d", samples=200)
    make, calls = _counting_maker()
    first = cached_table(spec, "1.0", make)
    second = cached_table(spec, "1.0", make)
    assert len(calls) == 1
    assert cache_folder() == cache and len(list(cache.glob("mnist1d-*.npz"))) == 1
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert (first.features, first.feature_types) == (second.features, second.feature_types)


def test_split_settings_share_a_table_and_other_settings_or_versions_do_not(cache):
    make, calls = _counting_maker()
    cached_table(Mnist1dSource(source="mnist1d", samples=200), "1.0", make)
    cached_table(Mnist1dSource(source="mnist1d", samples=200, split_seed=7), "1.0", make)
    assert len(calls) == 1
    cached_table(Mnist1dSource(source="mnist1d", samples=300), "1.0", make)
    cached_table(Mnist1dSource(source="mnist1d", samples=200), "2.0", make)
    assert len(calls) == 3


def test_a_torn_cache_file_is_made_again(cache):
    spec = DigitsSource(source="digits")
    make, calls = _counting_maker()
    cached_table(spec, "1.0", make)
    (path,) = cache.glob("digits-*.npz")
    path.write_bytes(path.read_bytes()[:40])  # a crash mid-write on a file system without rename
    table = cached_table(spec, "1.0", make)
    assert len(calls) == 2 and table.x.shape == (6, 2)
    assert cached_table(spec, "1.0", make).x.shape == (6, 2) and len(calls) == 2


def test_the_real_generator_gives_the_same_data_cached_or_not(cache):
    spec = Mnist1dSource(source="mnist1d", samples=200)
    fresh = _generate_mnist1d(spec)  # made, then stored
    again = _generate_mnist1d(spec)  # read back
    np.testing.assert_array_equal(fresh.x, again.x)
    np.testing.assert_array_equal(fresh.labels, again.labels)
    assert list(cache.glob("mnist1d-*.npz"))
