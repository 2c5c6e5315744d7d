"""SLI rows: merging rows of equal keys gives, bit for bit, one ``reduceat`` over the key groups."""

import numpy as np
import pytest

from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows


@pytest.mark.parametrize("clients", [1, 7, 500, 5_000])
def test_combined_rows_equal_a_reduceat_over_each_key_group(clients):
    rng = np.random.default_rng(clients)
    n = 5_000  # from every key occurring many times to most keys occurring once
    rows = SliRows(rng.integers(0, 3, n) * 60, rng.choice(np.array(["m", "n"], object), n),
                   np.array([f"c{i}" for i in rng.integers(0, clients, n)], object),
                   rng.random((n, len(VALUE_COLUMNS))),
                   np.where(rng.random((n, len(BAD_COUNTERS))) < 0.3, rng.random((n, len(BAD_COUNTERS))), np.inf))
    merged = rows.combined()
    keys = list(zip(rows.bucket.tolist(), rows.model.tolist(), rows.client.tolist(), strict=True))
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    expected = {key: (np.add.reduceat(rows.values[i], [0], axis=0)[0],  # each group's rows in row order
                      np.minimum.reduceat(rows.first[i], [0], axis=0)[0]) for key, i in groups.items()}
    got = list(zip(merged.bucket.tolist(), merged.model.tolist(), merged.client.tolist(), strict=True))
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    for i, key in enumerate(got):
        assert np.array_equal(merged.values[i], expected[key][0]) and np.array_equal(merged.first[i], expected[key][1])
