"""Query matching behind the watermark: the verdicts depend on the queries, not on the order they arrived in,
how they were batched or how many workers sent them; the counter changes add up to what matching at once
would count; a restarted matcher (pickled state) goes on the same."""

import pickle

import numpy as np
import pytest

from monitor.contracts.match_requests import (
    ADVERSARIAL_CANARY,
    BENIGN_CANARY,
    PRODUCTION,
    MatchGroup,
    MatchRequestBatch,
)
from monitor.contracts.sli import SliRows
from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.fingerprint import Fingerprinter, content_hashes
from monitor.detect.matcher import MatcherCheckpoint, MatcherSettings, MatchResult, OrderedMatcher
from monitor.detect.parsing import parse_batch
from monitor.errors import WireError
from monitor.sim.synth import Scenario

FP = Fingerprinter.for_dimension(64, secret=b"test")


def queries(n: int = 600, seed: int = 0) -> MatchGroup:
    """Benign queries of 40 clients, and a probe of 5 keys: near-identical variations of one input, 5 s apart."""
    rng = np.random.default_rng(seed)
    benign = rng.random((n, 64), dtype=np.float32)
    base = rng.random(64, dtype=np.float32)
    probe = np.clip(base + rng.normal(0, 0.002, (n // 3, 64)), 0, 1).astype(np.float32)
    x = np.vstack([benign, probe, probe[:5]])  # and five exact repeats
    clients = np.r_[rng.integers(0, 40, n).astype(str), [f"sybil{i % 5}" for i in range(n // 3 + 5)]]
    ts = np.r_[rng.uniform(0, 600, n), 100 + 1.5 * np.arange(n // 3), [400.0] * 5]
    traffic = np.zeros(len(x), np.int8)
    traffic[:6] = ADVERSARIAL_CANARY
    traffic[6:12] = BENIGN_CANARY
    ids = np.array([f"e{i}" for i in range(len(x))], object)
    return MatchGroup("64", FP.threshold, np.full(len(x), "m", object), ids, clients.astype(object), ts, traffic,
                      rng.random(len(x)) < 0.05, rng.random(len(x)), FP.hashes(x), content_hashes(x))


def run(matcher: OrderedMatcher, requests: list[MatchRequestBatch]) -> MatchResult:
    parts = []
    for request in requests:
        matcher.add(request, now=0.0)
        parts.append(matcher.advance(now=0.0))
    parts.append(matcher.flush())
    return MatchResult.concat(parts)


def in_batches(group: MatchGroup, order: np.ndarray, sizes: int, instances: int) -> list[MatchRequestBatch]:
    """The queries in ``order``, cut in batches of ``sizes``, sent round-robin by ``instances`` workers; each
    batch carries its worker's watermark (the latest event time it has sent)."""
    latest = [-np.inf] * instances
    out = []
    for i, start in enumerate(range(0, len(order), sizes)):
        part = group.take(order[start:start + sizes])
        who = i % instances
        latest[who] = max(latest[who], float(part.ts.max()))
        out.append(MatchRequestBatch(f"ingest-{who}", latest[who], [part]))
    return out


def fingerprint(result: MatchResult) -> tuple:
    v = result.verdicts
    # sorted whole: an event of two input kinds has a verdict of each, in whichever order they were matched
    verdicts = sorted(zip(*(c.tolist() for c in (v.event_id, v.near, v.own, v.cross, v.matched_client, v.duplicate)),
                          strict=True))
    rows = result.rows.combined()
    key = np.lexsort((rows.client.astype(str), rows.bucket))
    edges = result.edges.combined()
    return (*(list(c) for c in (zip(*verdicts, strict=True) if verdicts else [()] * 6)), rows.bucket[key].tolist(),
            rows.client[key].tolist(), rows.values[key].tolist(), sorted(edges.records(), key=str),
            sorted(result.flagged.event_id.tolist()))


def test_verdicts_do_not_depend_on_arrival_order_batching_or_workers():
    group = queries()
    settings = MatcherSettings(bucket_s=60, grace_s=30)
    in_time = np.lexsort((group.event_id.astype(str), group.ts))
    reference = fingerprint(run(OrderedMatcher(settings), in_batches(group, in_time, 10_000, 1)))
    assert sum(reference[1]) > 150  # the probe is found
    rng = np.random.default_rng(5)
    for sizes, instances in ((37, 1), (101, 2), (64, 3)):
        # each worker's stream is in event time up to a few seconds, the interleaving of workers arbitrary
        jitter = np.lexsort((rng.random(len(group)), np.floor(group.ts / 5)))
        assert fingerprint(run(OrderedMatcher(settings), in_batches(group, jitter, sizes, instances))) == reference


def test_a_bucket_waits_for_the_slowest_worker_and_an_idle_one_stops_holding_it():
    group = queries()
    m = OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=0, idle_source_s=60))
    early, late = group.take(group.ts < 60), group.take(group.ts >= 60)
    m.add(MatchRequestBatch("a", 200.0, [late]), now=0.0)
    m.add(MatchRequestBatch("b", 30.0, [early]), now=0.0)
    assert len(m.advance(now=0.0).verdicts) == 0 and m.pending_queries == len(group)  # "b" holds at 30 s
    m.add(MatchRequestBatch("a", 250.0, []), now=100.0)
    result = m.advance(now=100.0)  # "b" quiet for 100 s: "a" alone moves the watermark to 250 s
    assert sorted(result.verdicts.event_id.tolist()) == sorted(group.event_id[group.ts < 240].tolist())


def test_counter_changes_are_what_matching_finds():
    group = queries()
    result = run(OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=0)), [MatchRequestBatch("a", np.inf, [group])])
    v = result.verdicts
    at = {e: i for i, e in enumerate(v.event_id.tolist())}
    rows = np.array([at[e] for e in group.event_id.tolist()])
    near, dup = v.near[rows], v.duplicate[rows]
    production = group.traffic == PRODUCTION
    newly = near & ~group.anomalous

    def total(name):
        return float(result.rows.column(name).sum())

    assert dup.sum() == 5 and total("duplicates") == 5 and total("queries") == -5
    assert total("query_flagged") == (near & production).sum() > 0
    assert total("clean_events") == -(newly & production).sum()
    assert total("clean_conf_sum") == pytest.approx(-group.confidence[newly & production].sum())
    assert total("adv_missed") == -(newly & (group.traffic == ADVERSARIAL_CANARY)).sum()
    assert total("benign_flagged") == (newly & (group.traffic == BENIGN_CANARY)).sum()
    assert total("private_near_dup") == (v.own[rows] & ~v.cross[rows] & production).sum()
    assert len(result.flagged) == (newly & production).sum()
    assert set(result.flagged.reason) == {"near-duplicate"}
    sybils = {c for c in result.edges.client.tolist()} | {c for c in result.edges.other.tolist()}
    assert {f"sybil{i}" for i in range(5)} <= sybils


def test_a_pickled_matcher_goes_on_as_the_original():
    group = queries()
    order = np.argsort(group.ts, kind="stable")
    requests = in_batches(group, order, 50, 2)
    original = OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=30))
    first = run_some(original, requests[:8])
    copy = pickle.loads(pickle.dumps(original))
    assert fingerprint(run(copy, requests[8:])) == fingerprint(run(original, requests[8:]))
    assert len(first.verdicts) > 0


@pytest.mark.parametrize("stop", [3, 9, 17, 30])
def test_a_matcher_rebuilt_from_its_checkpoint_and_the_log_goes_on_as_the_original(stop):
    """A restart: the checkpoint (the offset commit's metadata) and the requests from its ``replay_from`` on
    rebuild the indexes, generations that closed and were forgotten included, and the queries still waiting."""
    group = queries(900, seed=3)
    rng = np.random.default_rng(stop)
    jitter = np.lexsort((rng.random(len(group)), np.floor(group.ts / 5)))
    requests = in_batches(group, jitter, 40, 2)
    settings = MatcherSettings(bucket_s=60, grace_s=30, generation_queries=150, generation_s=200.0)
    original = OrderedMatcher(settings)
    for offset, request in enumerate(requests[:stop]):
        original.add(request, now=0.0, offset=offset)
        original.advance(now=0.0)
    checkpoint = MatcherCheckpoint.from_json(original.checkpoint.to_json())
    assert checkpoint is not None and checkpoint == original.checkpoint
    log = [(offset, request, 0.0) for offset, request in enumerate(requests[:stop])][checkpoint.replay_from:]
    rebuilt = OrderedMatcher.restored(settings, checkpoint, log)
    assert rebuilt.pending_queries == original.pending_queries
    assert rebuilt.stored_queries == original.stored_queries
    assert rebuilt.checkpoint.sealed_until == checkpoint.sealed_until
    assert rebuilt.lookback_s == original.lookback_s  # how far back it matches survives the restart
    assert fingerprint(run(rebuilt, requests[stop:])) == fingerprint(run(original, requests[stop:]))


def test_the_checkpoint_forgets_requests_once_their_generation_is_gone():
    group = queries(900, seed=3)
    requests = in_batches(group, np.argsort(group.ts, kind="stable"), 40, 1)
    matcher = OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=30, generation_queries=150))
    froms = []
    for offset, request in enumerate(requests):
        matcher.add(request, now=0.0, offset=offset)
        matcher.advance(now=0.0)
        froms.append(matcher.checkpoint.replay_from)
    assert froms == sorted(froms) and 0 < froms[-1] < len(requests) - 5
    assert set(matcher.checkpoint.openers) == {"64"}
    assert 0 < matcher.lookback_s < group.ts.max() - group.ts.min()  # it forgot: it no longer reaches the start
    with pytest.raises(WireError):
        MatcherCheckpoint.from_json('{"v": 1}')


def run_some(matcher, requests):
    parts = []
    for request in requests:
        matcher.add(request, now=0.0)
        parts.append(matcher.advance(now=0.0))
    return MatchResult.concat(parts)


def test_engine_with_its_own_matcher_counts_what_engine_plus_remote_matcher_counts():
    """Ingest with its own matcher, and ingest with remote matching plus ``advmon matcher``: the same rows."""
    scenario = Scenario.build(seed=4, duration_s=1800.0)
    local = Engine(EngineSettings(fingerprint_secret=b"s"))
    remote = Engine(EngineSettings(fingerprint_secret=b"s", remote_matching=True))
    matcher = OrderedMatcher(MatcherSettings())
    mine, theirs = [], []
    for chunk in scenario.chunks(chunk_s=120.0):
        batch = parse_batch(chunk.records).batch
        mine.append(local.process(batch).rows)
        result = remote.process(batch)
        assert float(result.rows.column("query_flagged").sum()) == 0 and result.match_groups
        theirs.append(result.rows)
        matcher.add(MatchRequestBatch("ingest-0", result.watermark, result.match_groups), now=0.0)
        theirs.append(matcher.advance(now=0.0).rows)
    mine.append(local.finish().rows)
    theirs.append(matcher.flush().rows)
    a, b = SliRows.concat(mine).combined(), SliRows.concat(theirs).combined()
    assert float(a.column("query_flagged").sum()) > 100
    key_a, key_b = (np.lexsort((r.client.astype(str), r.model.astype(str), r.bucket)) for r in (a, b))
    assert a.bucket[key_a].tolist() == b.bucket[key_b].tolist()
    np.testing.assert_allclose(a.values[key_a], b.values[key_b])


def test_partitions_hold_across_a_hand_over_and_until_first_reported():
    """Event time per input partition: one no worker has reported holds from the first request that names it;
    one handed to another worker holds where it had got to, though the worker that lost it has moved on."""
    m = OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=0, idle_source_s=60))

    def report(worker, watermark, partitions, now=0.0):
        m.add(MatchRequestBatch(worker, watermark, [], partitions, ("logs", 3)), now=now)
        return m.watermark(now)

    assert report("w1", 500.0, {"logs/0": 500.0, "logs/1": 520.0}) == -np.inf  # logs/2: not reported yet
    assert report("w2", 450.0, {"logs/2": 450.0}) == 450.0
    assert report("w2", 700.0, {"logs/2": 700.0}) == 500.0
    # logs/0 moves from w1 to w2: w1 reports without it and runs ahead; w2 has not read it yet
    assert report("w1", 900.0, {"logs/1": 900.0}) == 500.0
    assert report("w2", 700.0, {"logs/0": -np.inf, "logs/2": 900.0}) == 500.0
    assert report("w2", 880.0, {"logs/0": 880.0, "logs/2": 950.0}) == 880.0
    assert report("w1", 990.0, {"logs/1": 990.0}, now=100.0) == 990.0  # the others quiet for 100 s: idle
