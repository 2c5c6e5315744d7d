"""Margin ranks against the population a bucket sees: the same ranks however the events are batched or merged."""

import pickle

import numpy as np
import pytest

from monitor.contracts.margin_counts import MarginCountsBatch
from monitor.detect.margin_ranks import MarginRanks, count_margins


def traffic(n=6000, hours=2.0, disorder_s=90.0, seed=0):
    """Events over ``hours`` with three classes and some score bands, read with up to ``disorder_s`` of disorder."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, hours * 3600, n))
    read = np.argsort(ts + rng.uniform(0, disorder_s, n), kind="stable")
    labels = rng.integers(0, 3, n).astype(str).astype(object)
    scores = rng.normal(0.3, 0.4, n)
    margins = np.clip(rng.normal(0.7, 0.2, n), 0, 1)
    margins[rng.random(n) < 0.05] = np.nan  # no logits logged
    return ts[read], labels[read], scores[read], margins[read]


def ranked_in_batches(sizes, data, estimator=None):
    """Each batch learnt, then ranked (as the engine does); the ranks in reading order."""
    ts, labels, scores, margins = data
    estimator = estimator or MarginRanks(min_count=50)
    buckets = (ts // 60).astype(np.int64) * 60
    out, start = np.full(len(ts), np.nan), 0
    for size in sizes:
        part = slice(start, min(start + size, len(ts)))
        estimator.update("m", labels[part], scores[part], margins[part], buckets[part])
        out[part] = estimator.rank("m", labels[part], scores[part], margins[part], buckets[part])
        start = part.stop
    assert start >= len(ts)
    return out


@pytest.mark.parametrize("sizes", [[37] * 200, [500] * 12, [6000], [1, 2, 3000, 17, 2980]])
def test_ranks_do_not_depend_on_how_the_events_are_batched(sizes):
    data = traffic()
    one_at_a_time = ranked_in_batches([1] * len(data[0]), data)
    assert np.isfinite(one_at_a_time).sum() > 4000
    np.testing.assert_allclose(ranked_in_batches(sizes, data), one_at_a_time, rtol=0, atol=1e-12)


def test_an_event_sees_the_buckets_that_ended_lag_s_before_its_own_began_and_no_later_one():
    ranks = MarginRanks(min_count=50, lag_s=600)
    typical = np.full(500, 0.8)
    one = np.full(500, "1", dtype=object)
    ranks.update("m", one, np.zeros(500), typical, np.zeros(500, np.int64))  # bucket 0, over at 60
    ranks.update("m", one, np.zeros(500), np.full(500, 0.1), np.full(500, 60))  # bucket 60, over at 120
    probe = ("m", one[:1], np.zeros(1), np.array([0.5]))
    assert np.isnan(ranks.rank(*probe, np.full(1, 600))[0])  # bucket 0 is over only 540 s before 600
    assert ranks.rank(*probe, np.full(1, 660))[0] == 0.0  # sees bucket 0 (every margin above 0.5) alone
    assert ranks.rank(*probe, np.full(1, 720))[0] == pytest.approx(0.5, abs=1e-3)  # and now bucket 60 as well


def test_two_workers_merged_rank_as_one_that_read_everything():
    data = traffic(seed=1)
    ts, labels, scores, margins = data
    buckets = (ts // 60).astype(np.int64) * 60
    half = np.random.default_rng(2).random(len(ts)) < 0.5  # each worker reads some clients
    workers = [MarginRanks(min_count=50), MarginRanks(min_count=50)]
    alone = MarginRanks(min_count=50)
    for part in np.array_split(np.arange(len(ts)), 12):  # in time order: older minutes settle as it goes
        for estimator, mine in ((workers[0], part[half[part]]), (workers[1], part[~half[part]]), (alone, part)):
            estimator.update("m", labels[mine], scores[mine], margins[mine], buckets[mine])
    workers[1].update("m", labels[:1], scores[:1], margins[:1], buckets[-1:] + 3600)  # one worker is ahead
    alone.update("m", labels[:1], scores[:1], margins[:1], buckets[-1:] + 3600)
    workers[0].merge(workers[1])
    merged = pickle.loads(pickle.dumps(workers[0]))  # state travels as plain arrays
    later = np.full(len(ts), int(buckets.max()) + 3600 + 660)
    np.testing.assert_allclose(merged.rank("m", labels, scores, margins, later),
                               alone.rank("m", labels, scores, margins, later), rtol=0, atol=1e-12)


def test_benign_ranks_are_uniform_and_an_attackers_low_margins_rank_near_zero():
    data = traffic(n=20000, hours=4.0, seed=3)
    ranks = ranked_in_batches([2000] * 10, data)
    settled = ranks[data[0] > 3600]  # after an hour of population
    assert np.nanmean(settled) == pytest.approx(0.5, abs=0.02)
    estimator = MarginRanks(min_count=50)
    ts, labels, scores, margins = data
    estimator.update("m", labels, scores, margins, (ts // 60).astype(np.int64) * 60)
    attack = estimator.rank("m", labels[:50], scores[:50], np.full(50, 0.02), np.full(50, 4 * 3600 + 600))
    assert np.nanmax(attack) < 0.05


def test_a_bucket_later_than_the_settled_population_counts_as_if_it_had_come_in_time():
    ts, labels, scores, margins = traffic(seed=4, disorder_s=0.0)
    buckets = (ts // 60).astype(np.int64) * 60
    early = buckets < 1800  # the first half hour: for the late estimator, it arrives after everything else
    in_time, late = MarginRanks(min_count=50), MarginRanks(min_count=50)
    for part in np.array_split(np.arange(len(ts)), 12):
        in_time.update("m", labels[part], scores[part], margins[part], buckets[part])
        rest = part[~early[part]]
        late.update("m", labels[rest], scores[rest], margins[rest], buckets[rest])
    late.update("m", labels[early], scores[early], margins[early], buckets[early])
    assert late._models["m"].settled_until > 1800  # it came after its buckets had settled
    probe = np.full(len(ts), int(buckets.max()) + 660)
    np.testing.assert_allclose(late.rank("m", labels, scores, margins, probe),
                               in_time.rank("m", labels, scores, margins, probe), rtol=0, atol=1e-12)


@pytest.mark.parametrize("lag_batches", [0, 1, 8])
def test_workers_that_share_their_counts_rank_each_event_as_one_that_read_everything(lag_batches):
    """Two workers, each ranking its own clients' events and taking in the other's counts after every batch (the
    margin-counts topic), give every event replay's rank: in step, and with one worker a batch (four minutes of
    event time) behind the other, so that the leader's newest events are less than ``lag_s`` ahead of what the
    other has read, disorder included. Half an hour behind, the leader ranks without the other's latest minutes,
    but the one that lags still ranks exactly: the leader's later minutes stay out of its population
    (``PEER_HORIZON_S``)."""
    ts, labels, scores, margins = traffic(n=8000, hours=3.0, seed=5)
    buckets = (ts // 60).astype(np.int64) * 60
    mine = np.random.default_rng(6).random(len(ts)) < 0.5
    parts = np.array_split(np.arange(len(ts)), 48)  # about 4 minutes of event time each
    alone = ranked_in_batches([len(p) for p in parts], (ts, labels, scores, margins))
    workers, ranks = [MarginRanks(min_count=50), MarginRanks(min_count=50)], np.full(len(ts), np.nan)
    turns = [(0, i) for i in range(len(parts))] + [(1, i) for i in range(len(parts))]
    turns.sort(key=lambda turn: turn[1] + (lag_batches if turn[0] == 1 else 0))  # worker 1 behind by lag_batches
    for w, i in turns:
        rows = parts[i][mine[parts[i]] == (w == 0)]
        counts = count_margins("m", labels[rows], scores[rows], margins[rows], buckets[rows])
        workers[w].add(counts)
        ranks[rows] = workers[w].rank("m", labels[rows], scores[rows], margins[rows], buckets[rows])
        workers[1 - w].add(MarginCountsBatch.decode(MarginCountsBatch("w", [counts]).encode()).parts[0], peer=True)
    assert np.isfinite(alone).sum() > 6000
    exact = ~mine if lag_batches > 1 else np.ones(len(ts), bool)
    np.testing.assert_allclose(ranks[exact], alone[exact], rtol=0, atol=1e-12)
    assert lag_batches <= 1 or not np.allclose(ranks[mine], alone[mine], equal_nan=True)


def test_a_peer_message_without_cells_changes_nothing():
    ranks = MarginRanks(min_count=1)
    empty = MarginCountsBatch.decode(MarginCountsBatch("w", [count_margins(
        "m", np.empty(0, object), np.empty(0), np.empty(0), np.empty(0, np.int64))]).encode()).parts[0]
    ranks.add(empty, peer=True)
    assert len(empty) == 0 and pickle.dumps(ranks) == pickle.dumps(MarginRanks(min_count=1))
