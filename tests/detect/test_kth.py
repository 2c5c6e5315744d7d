"""The k-th largest per row: exactly what a full partition gives, whichever path a row takes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detect.kth import MIN_COLUMNS, SAMPLE, kth_largest


def partitioned(rows, k):
    return np.partition(rows, rows.shape[1] - k, axis=1)[:, rows.shape[1] - k]


@pytest.mark.parametrize("columns", [MIN_COLUMNS - 1, MIN_COLUMNS, 1796, 2048])
@pytest.mark.parametrize("k", [1, 14, 50])
def test_equals_a_full_partition_on_similarities(columns, k):
    rng = np.random.default_rng(columns + k)
    bank = rng.normal(size=(columns, 16)).astype(np.float32)
    queries = np.vstack([rng.normal(size=(300, 16)), bank[:100] + 0.01]).astype(np.float32)
    rows = queries @ bank.T
    assert np.array_equal(kth_largest(rows, k), partitioned(rows, k))


def test_rows_whose_sample_holds_the_largest_values_fall_back_to_a_full_partition():
    """All of a row's large values sit in the sampled quarter: too few values reach the sample's threshold."""
    rows = np.zeros((3, 1024), np.float32)
    rows[:, :1024 // SAMPLE] = np.linspace(1, 2, 1024 // SAMPLE)
    rows[1] = np.random.default_rng(0).random(1024)
    assert np.array_equal(kth_largest(rows, 100), partitioned(rows, 100))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(MIN_COLUMNS, 600), st.integers(1, 40), st.integers(0, 2**32 - 1),
       st.integers(1, 6))
def test_ties_and_few_levels_keep_it_exact(n_rows, columns, k, seed, levels):
    rows = np.random.default_rng(seed).integers(0, levels, size=(n_rows, columns)).astype(np.float32)
    assert np.array_equal(kth_largest(rows, k), partitioned(rows, k))
