"""The query index against a brute-force reference: every near-duplicate verdict, own or cross-client, exact
repeats, whatever the batching; and the per-pair counts behind them, which add up over disjoint sets of hashes."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detect.fingerprint import (
    PairCounts,
    QueryIndex,
    _distinct_counts,
    _PairKeys,
    _Run,
    content_hashes,
    stable_order,
)


def queries(seed: int, n: int = 300, width: int = 12, vocabulary: int = 60):
    """Hash sets (0-padded rows) drawn so that many overlap, clients, and exact repeats."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1, vocabulary, (n, width)).astype(np.uint64)
    for i in range(1, n):  # a third are variations of an earlier query
        if rng.random() < 0.33:
            j = rng.integers(0, i)
            keep = rng.random(width) < 0.8
            base[i] = np.where(keep, base[j], base[i])
    rows = np.zeros_like(base)
    for i, row in enumerate(base):
        distinct = np.unique(row)[::-1]
        rows[i, : len(distinct)] = distinct
    content = rows.sum(axis=1) * np.uint64(2654435761)  # equal hash sets: "byte-identical" queries
    clients = rng.integers(1, 6, n).astype(np.uint64)
    return rows, content, clients


def brute_force(rows, content, clients, threshold, cap=None):
    """Each query against every earlier one; with ``cap``, a hash counts only with its ``cap`` latest holders."""
    seen, stored = set(), []
    flagged, own, cross, duplicate, best_cross = [], [], [], [], []
    for hashes, exact, client in zip(rows, content, clients, strict=True):
        if int(exact) in seen:
            duplicate.append(True), flagged.append(False), own.append(False), cross.append(False)
            best_cross.append(set())
            continue
        seen.add(int(exact))
        mine = set(hashes[hashes != 0].tolist())
        latest = {h: [i for i, (other, _) in enumerate(stored) if h in other][-cap:] for h in mine} if cap else None
        overlaps = [(len(mine & other) if latest is None else sum(i in latest[h] for h in mine & other), owner)
                    for i, (other, owner) in enumerate(stored)]
        top = max([o for o, _ in overlaps], default=0)
        top_cross = max([o for o, w in overlaps if w != client], default=0)
        duplicate.append(False)
        flagged.append(top >= threshold)
        own.append(max([o for o, w in overlaps if w == client], default=0) >= threshold)
        cross.append(top_cross >= threshold)
        best = {w for o, w in overlaps if w != client and o == top_cross}
        best_cross.append(best if top_cross >= threshold else set())
        stored.append((mine, client))
    return [np.array(a) for a in (flagged, own, cross, duplicate)] + [best_cross]


@pytest.mark.parametrize("seed, batch", [(0, 300), (1, 64), (2, 7), (3, 1)])
def test_matches_equal_brute_force_whatever_the_batching(seed, batch):
    rows, content, clients = queries(seed)
    index = QueryIndex(threshold=6, postings_cap=10_000)
    parts = [index.update(rows[i:i + batch], content[i:i + batch], now=0.0, clients=clients[i:i + batch])
             for i in range(0, len(rows), batch)]
    flagged, own, cross, duplicate, best_cross = brute_force(rows, content, clients, 6)
    got = {name: np.concatenate([getattr(p, name) for p in parts]) for name in
           ("flagged", "own_flagged", "cross_flagged", "duplicate", "matched_client")}
    assert flagged.any() and own.any() and cross.any() and duplicate.any()  # the data exercises every verdict
    assert (got["flagged"] == flagged).all() and (got["own_flagged"] == own).all()
    assert (got["cross_flagged"] == cross).all() and (got["duplicate"] == duplicate).all()
    assert all(int(m) in best for m, best, c in zip(got["matched_client"], best_cross, cross, strict=True) if c)


def pair_totals(pairs: PairCounts) -> dict[tuple[int, int], int]:
    totals: dict[tuple[int, int], int] = {}
    for row, earlier, count in zip(pairs.row.tolist(), pairs.earlier.tolist(), pairs.count.tolist(), strict=True):
        totals[(row, earlier)] = totals.get((row, earlier), 0) + count
    return totals


@pytest.mark.parametrize("shards, batch, cap", [(2, 300, 10_000), (3, 64, 4), (4, 7, 2)])
def test_pair_counts_of_disjoint_hash_sets_add_up_to_the_whole_index(shards, batch, cap):
    """The property an index sharded by hash value rests on: each shard holding the hashes ``h % shards`` of its
    own counts its part of every pair (the postings cap is per hash, so within one shard), and the parts sum to
    what one index counts; the whole index's verdicts are its pairs' maxima."""
    rows, content, clients = queries(4)

    def run(hashes):
        index, matches, pairs = QueryIndex(threshold=6, postings_cap=cap), [], []
        for i in range(0, len(hashes), batch):
            m, p = index.update_with_pairs(hashes[i:i + batch], content[i:i + batch], 0.0, clients[i:i + batch])
            matches.append(m)
            pairs.append(replace(p, row=p.row + i))
        return index, matches, PairCounts.concat(pairs)

    index, matches, whole = run(rows)
    parts = [run(np.where(rows % np.uint64(shards) == s, rows, np.uint64(0)))[2] for s in range(shards)]
    summed: dict[tuple[int, int], int] = {}
    for part in parts:
        assert len(part) < len(whole)  # each shard sees only some of the pairs' hashes
        for key, count in pair_totals(part).items():
            summed[key] = summed.get(key, 0) + count
    assert summed == pair_totals(whole)
    for pairs in (whole, *parts):  # in (row, earlier id) order, each pair once
        assert (np.diff(pairs.row) >= 0).all() and (np.diff(pairs.earlier)[np.diff(pairs.row) == 0] > 0).all()
    score = np.concatenate([m.score for m in matches])
    best = np.zeros(len(rows), np.int64)
    np.maximum.at(best, whole.row, whole.count)
    assert (best == score).all() and (score >= 6).any()
    near = whole.count >= 6
    same = whole.owner[near] == clients[whole.row[near]]
    own = np.zeros(len(rows), bool)
    own[whole.row[near][same]] = True
    assert (own == np.concatenate([m.own_flagged for m in matches])).all()


def test_each_pair_names_its_earlier_querys_client_even_where_the_same_update_forgets_it():
    """Generations of 20 queries, 300 queries in one update: pairs found early in it reach queries whose generation
    a later block of the same update drops; their client is the one that sent them."""
    rows, content, clients = queries(5)
    matches, pairs = QueryIndex(threshold=6, generation_queries=20).update_with_pairs(rows, content, 0.0, clients)
    stored = np.flatnonzero(~matches.duplicate)  # ids are the places of the queries stored, in input order
    assert len(stored) > 60 and (pairs.earlier < len(stored) - 40).any()  # some pairs reach forgotten queries
    assert (pairs.owner == clients[stored[pairs.earlier]]).all()


@pytest.mark.parametrize("batch", [300, 64, 7, 1])
def test_the_postings_cap_keeps_each_hashs_latest_queries_whatever_the_batching(batch):
    """A small cap binds on this data (a hash shared by dozens of queries): each hash still counts with exactly
    its ``postings_cap`` latest earlier queries, however the index stored them (one run, or many)."""
    rows, content, clients = queries(4, vocabulary=25)
    index = QueryIndex(threshold=6, postings_cap=4)
    parts = [index.update(rows[i:i + batch], content[i:i + batch], now=0.0, clients=clients[i:i + batch])
             for i in range(0, len(rows), batch)]
    flagged, own, cross, duplicate, _ = brute_force(rows, content, clients, 6, cap=4)
    unlimited = brute_force(rows, content, clients, 6)[0]
    assert flagged.sum() < unlimited.sum()  # the cap binds
    for name, want in (("flagged", flagged), ("own_flagged", own), ("cross_flagged", cross)):
        assert (np.concatenate([getattr(p, name) for p in parts]) == want).all(), name


def test_a_generation_closes_at_the_first_query_past_its_age_however_batched():
    rows, content, clients = queries(5)
    times = np.linspace(0.0, 100.0, len(rows))
    results = []
    for batch in (300, 13):
        index = QueryIndex(threshold=6, generation_seconds=30.0)
        parts = [index.update(rows[i:i + batch], content[i:i + batch], now=times[i:i + batch],
                              clients=clients[i:i + batch]) for i in range(0, len(rows), batch)]
        results.append(np.concatenate([p.flagged for p in parts]))
        assert index.stored_queries < len(rows)  # the oldest generation was forgotten
    assert (results[0] == results[1]).all()


@pytest.mark.parametrize("batch", [300, 41, 1])
def test_the_look_back_is_unbounded_until_a_query_is_forgotten_then_spans_the_live_generations(batch):
    """Generations of 50 queries, one a second: the look-back is infinite while the first generation lives, then
    from the oldest live generation's first query to the newest query, whatever the batching; a rebuild from the
    oldest generation's opening reports the same."""
    rows, content, clients = queries(6)
    times = np.arange(len(rows), dtype=np.float64)
    index = QueryIndex(threshold=6, generation_queries=50)
    seen = []
    for i in range(0, len(rows), batch):
        index.update(rows[i:i + batch], content[i:i + batch], now=times[i:i + batch], clients=clients[i:i + batch])
        seen.append((len(np.unique(content[:i + batch])), index.lookback_s))  # queries stored so far
    stored = len(np.unique(content))
    assert stored > 100  # a third generation opened: the first was forgotten
    assert all(lookback == np.inf for held, lookback in seen if held < 100)
    opened = index.generation_openings[0]
    assert index.lookback_s == times[-1] - times[opened]
    assert 50 <= index.lookback_s < 2 * 50 + (len(rows) - stored)  # one to two generations, repeats aside
    rebuilt = QueryIndex(threshold=6, generation_queries=50).starting_at(opened, index.generation_ids[0])
    rebuilt.update(rows[opened:], content[opened:], now=times[opened:], clients=clients[opened:])
    assert rebuilt.lookback_s == index.lookback_s
    assert QueryIndex(threshold=6).starting_at(0, 0).lookback_s == np.inf
    assert QueryIndex(threshold=6).starting_at(opened, 7).lookback_s == np.inf  # rebuilt, before its first query


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=30), min_size=1, max_size=4),
       st.integers(0, 2**40), st.sampled_from([41, 2**31]))
def test_pair_keys_count_every_pair_once_in_row_then_earlier_order(parts_as_lists, base, stored):
    """Rows 0..5 over ``stored`` ids from ``base`` (the earlier ids used: base..base+40): 32-bit keys (added modulo
    2**32 from ids far beyond it), or 64-bit ones where the stored ids need 32 bits."""
    keys = _PairKeys.of_block(np.arange(base + stored, base + stored + 6), base)
    assert keys.dtype == (np.uint32 if stored < 2**28 else np.int64)
    parts = [keys.owners(np.array([base + stored + r for r, _ in p], np.int64))
             + keys.ids(np.array([base + e for _, e in p], np.int64)) for p in parts_as_lists]
    distinct, counts = _distinct_counts(parts)
    rows, earlier = keys.split(distinct)
    expected: dict[tuple[int, int], int] = {}
    for p in parts_as_lists:
        for row, e in p:
            expected[row, base + e] = expected.get((row, base + e), 0) + 1
    pairs = list(zip(rows.tolist(), earlier.tolist(), strict=True))
    assert dict(zip(pairs, counts.tolist(), strict=True)) == expected and pairs == sorted(expected)


def test_merged_runs_keep_older_postings_first_among_equal_hashes():
    older = _Run(np.array([1, 3, 3, 7], np.uint64), np.array([0, 1, 2, 3]))
    newer = _Run(np.array([0, 3, 9], np.uint64), np.array([4, 5, 6]))
    merged = _Run.merge(older, newer)
    assert merged.hashes.tolist() == [0, 1, 3, 3, 3, 7, 9] and merged.ids.tolist() == [4, 0, 1, 2, 5, 3, 6]


@pytest.mark.parametrize("older, newer", [(500, 400), (5000, 40), (40, 5000)])
def test_runs_of_any_sizes_merge_as_one_stable_sort_of_their_postings(older, newer):
    """Alike sizes (a sort of both) and an older run over 30x longer (the newer placed by binary search): many
    equal hashes, older ids first among them."""
    rng = np.random.default_rng(older)
    runs = [_Run(np.sort(rng.integers(1, 50, n).astype(np.uint64)), np.arange(n) + start)
            for n, start in ((older, 0), (newer, older))]
    merged = _Run.merge(*runs)
    hashes = np.concatenate([r.hashes for r in runs])
    order = np.argsort(hashes, kind="stable")
    assert (merged.hashes == hashes[order]).all() and (merged.ids == np.arange(older + newer)[order]).all()


def test_content_hashes_tell_exact_bytes_apart():
    x = np.random.default_rng(0).random((200, 64), dtype=np.float32)
    x[100] = x[3]
    y = x.copy()
    y[:, 5] = np.nextafter(y[:, 5], np.float32(2))  # one ulp in one value
    hashed = content_hashes(x, b"s")
    assert len(set(hashed.tolist())) == 199 and hashed[100] == hashed[3]
    assert not set(hashed.tolist()) & set(content_hashes(y, b"s").tolist())


def test_a_stored_posting_costs_a_64_bit_hash_and_a_32_bit_id():
    rng = np.random.default_rng(4)
    hashes = np.sort(rng.integers(1, 2**63, (500, 30), dtype=np.uint64), axis=1)[:, ::-1].copy()
    index = QueryIndex(threshold=15, generation_queries=200)  # three generations opened, two kept: ids from 200
    clients = np.arange(1, 501, dtype=np.uint64)  # query i is client i + 1's
    for start in range(0, 500, 64):
        part = slice(start, start + 64)
        index.update(hashes[part], hashes[part, 0], now=0.0, clients=clients[part])
    stored = index.stored_queries
    assert stored == 300 and index.memory_bytes == stored * (30 * (8 + 4) + 8 + 8)  # + client and content hash
    again = index.update(hashes[[250, 450]], np.array([1, 2], np.uint64), now=0.0, clients=np.zeros(2, np.uint64))
    assert again.cross_flagged.all() and again.matched_client.tolist() == [251, 451]  # each id found its query


def test_a_generation_holds_no_more_queries_than_32_bit_ids_count():
    with pytest.raises(ValueError, match="32-bit ids"):
        QueryIndex(threshold=15, generation_queries=2**31)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([25, 50]))
def test_quantize_is_blacklights_salted_mod_255(seed, quantum):
    from monitor.detect.fingerprint import Fingerprinter

    fp = Fingerprinter.for_dimension(64, secret=seed.to_bytes(4, "little"))
    rng = np.random.default_rng(seed)
    x = rng.random((50, 64), dtype=np.float32)
    x[0], x[1] = 0.0, 1.0
    x[2] = (255.0 - fp._salt) / 255.0  # salted to 255 exactly, or a rounding away from it
    x[3] = np.nextafter(x[2], np.float32(0))
    reference = np.floor(np.mod(np.clip(x, 0, 1).astype(np.float32) * 255.0 + fp._salt, 255.0) / quantum)
    assert np.array_equal(fp.quantize(x, quantum), reference.astype(np.uint64))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 2**64 - 1), max_size=300), st.lists(st.integers(1, 2**64 - 1), max_size=50),
       st.integers(0, 3))
def test_a_run_finds_every_posting_of_a_needle_its_filter_passes_or_not(stored, others, repeats):
    """The filter only spares searches: each needle's span is its postings (searched without it), empty if none."""
    hashes = np.sort(np.array(stored * (1 + repeats) or [0], np.uint64)[: len(stored) * (1 + repeats)])
    run = _FilteredRun(hashes, np.arange(len(hashes)))
    needles = np.unique(np.array(stored[:20] + others, np.uint64))
    lo, hi = run.spans(needles)
    left, right = np.searchsorted(hashes, needles, "left"), np.searchsorted(hashes, needles, "right")
    held = right > left
    assert (lo[held] == left[held]).all() and (hi[held] == right[held]).all() and (hi[~held] == lo[~held]).all()
    assert run.may_hold(needles[held]).all()


class _FilteredRun(_Run):
    filtered_from = 0  # a filter however small the run


def test_a_large_run_costs_one_or_two_bytes_of_filter_a_posting_once_searched():
    hashes = np.sort(np.random.default_rng(5).integers(1, 2**63, 100_000, dtype=np.uint64) * np.uint64(2))
    run = _Run(hashes, np.arange(len(hashes), dtype=np.int32))
    assert run.nbytes == 12 * len(hashes)  # no filter until it is searched
    lo, hi = run.spans(hashes[::1000])
    assert (hi - lo == 1).all() and 13 * len(hashes) <= run.nbytes <= 14 * len(hashes)


@pytest.mark.parametrize("size, distinct", [(0, 1), (1, 1), (2, 1), (1000, 3), (50_000, 20_000), (50_000, 2**62)])
def test_the_fast_stable_order_is_numpys_stable_argsort(size, distinct):
    values = np.random.default_rng(size).integers(0, distinct, size, dtype=np.uint64)
    assert np.array_equal(stable_order(values), np.argsort(values, kind="stable"))
