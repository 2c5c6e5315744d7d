"""Burn-rate ring buffers: windows over event-time buckets."""

import numpy as np


def test_long_window_excludes_rows_that_arrived_ahead_of_evaluation():
    from monitor.alerting.burnrate import BurnRateWindows

    windows = BurnRateWindows(horizon_buckets=10)
    row = windows.rows([("m", None)])
    windows.add(row, np.array([3]), np.array([1.0]), np.array([10.0]), np.array([3.0]))
    windows.add(
        row, np.array([11]), np.array([9.0]), np.array([9.0]), np.array([11.0])
    )  # ahead: would share bucket 1's column
    windows.advance(4)
    bad, total = windows.sums(end=5, buckets=10)   # the window [-5, 5) must not see bucket 11
    assert (bad.tolist(), total.tolist()) == ([1.0], [10.0])
    windows.advance(11)
    bad, total = windows.sums(end=12, buckets=10)
    assert (bad.tolist(), total.tolist()) == ([10.0], [19.0])


def test_windows_do_not_depend_on_how_far_ahead_rows_arrive():
    """A 30-bucket window over a 40-bucket ring: rows fed one bucket at a time, or 25 buckets ahead of
    evaluation (a large batch), give the same sums at every evaluation."""
    from monitor.alerting.burnrate import BurnRateWindows

    rng = np.random.default_rng(0)
    total = rng.integers(50, 100, 200).astype(float)
    bad = np.floor(total * rng.random(200) * 0.1)
    sums = []
    for ahead in (1, 25):
        windows = BurnRateWindows(horizon_buckets=40)
        row = windows.rows([("m", None)])
        fed, seen = 0, []
        for end in range(1, 200):
            while fed < min(200, end + ahead):
                windows.add(row, np.array([fed]), bad[fed:fed + 1], total[fed:fed + 1], np.array([np.inf]))
                fed += 1
            windows.advance(end - 1)
            seen.append(tuple(float(x[0]) for x in windows.sums(end, 30)))
        sums.append(seen)
    assert sums[0] == sums[1]
    assert sums[0][100] == (bad[71:101].sum(), total[71:101].sum())
