"""Burn-rate ring buffers: windows over event-time buckets."""

import numpy as np


def test_long_window_excludes_rows_that_arrived_ahead_of_evaluation():
    from monitor.alerting.burnrate import BurnRateWindows

    windows = BurnRateWindows(horizon_buckets=10)
    row = windows.rows([("m", None)])
    windows.add(row, np.array([3]), np.array([1.0]), np.array([10.0]), np.array([3.0]))
    windows.add(
        row, np.array([11]), np.array([9.0]), np.array([9.0]), np.array([11.0])
    )  # ahead: shares bucket 1's column
    bad, total = windows.sums(end=5, buckets=10)   # the window [-5, 5) must not see bucket 11
    assert (bad.tolist(), total.tolist()) == ([1.0], [10.0])
    bad, total = windows.sums(end=12, buckets=10)
    assert (bad.tolist(), total.tolist()) == ([10.0], [19.0])
