"""score-requests messages stay under Kafka's message limit however large the ingest batch, and with remote
matching each message carries the queries of the same events as its embeddings."""

import numpy as np

from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.contracts.score_requests import PRODUCTION, ScoreGroup, ScoreRequestBatch


def group(model, n, dim, classes, rng):
    return ScoreGroup(model, np.array([f"{model}-{i}" for i in range(n)], object),
                      np.array([f"c{i % 7}" for i in range(n)], object), rng.random(n) * 60, rng.random(n),
                      np.full(n, PRODUCTION, np.int8), rng.random(n) < 0.1, rng.random(n) < 0.2,
                      rng.random((n, dim), dtype=np.float32),
                      None if classes == 0 else rng.random((n, classes), dtype=np.float32))


def test_chunks_fit_and_keep_every_row_in_order():
    rng = np.random.default_rng(0)
    request = ScoreRequestBatch("ingest-0", 123.0, [group("a", 4096, 96, 10, rng), group("b", 300, 768, 0, rng)])
    assert len(request.encode()) > 1 << 20  # one message would be refused by a default broker
    chunks = request.chunks(max_bytes=512 * 1024)
    assert all(len(c.encode()) <= 600 * 1024 for c in chunks) and len(chunks) >= 4
    decoded = [ScoreRequestBatch.decode(c.encode()) for c in chunks]
    assert [d.watermark for d in decoded] == [float("-inf")] * (len(chunks) - 1) + [123.0]  # event time moves last
    for model, original in (("a", request.groups[0]), ("b", request.groups[1])):
        parts = [g for d in decoded for g in d.groups if g.model == model]
        assert np.array_equal(np.concatenate([p.event_id for p in parts]), original.event_id)
        assert np.array_equal(np.vstack([p.embedding for p in parts]), original.embedding)


def test_an_empty_request_still_carries_the_watermark():
    [only] = ScoreRequestBatch("ingest-0", 60.0, []).chunks()
    assert only.groups == [] and ScoreRequestBatch.decode(only.encode()).watermark == 60.0



def queries(ids, rng, width=30):
    n = len(ids)
    return MatchGroup("64", 15, np.full(n, "a", object), ids, np.array(["c"] * n, object), rng.random(n) * 60,
                      np.zeros(n, np.int8), np.zeros(n, bool), rng.random(n), rng.integers(1, 1 << 62, (n, width),
                      dtype=np.uint64), rng.integers(1, 1 << 62, n, dtype=np.uint64))


def test_with_queries_each_message_carries_both_parts_of_its_events():
    rng = np.random.default_rng(1)
    embedded = group("a", 4096, 96, 10, rng)
    # queries of most of the events with embeddings (shuffled), and of some events without one
    ids = np.concatenate([rng.permutation(embedded.event_id)[:3000], [f"t-{i}" for i in range(500)]]).astype(object)
    marks = {"inference-logs-0": 100.0, "inference-logs-1": 123.0}
    request = ScoreRequestBatch("ingest-0", 123.0, [embedded], MatchRequestBatch(
        "ingest-0", 123.0, [queries(ids[:2000], rng), queries(ids[2000:], rng, 20)], marks, ("inference-logs", 2)))
    chunks = request.chunks(max_bytes=256 * 1024)
    assert len(chunks) >= 6 and all(len(c.encode()) <= 300 * 1024 for c in chunks)
    decoded = [ScoreRequestBatch.decode(c.encode()) for c in chunks]
    assert [(d.watermark, d.matches.watermark) for d in decoded][-1] == (123.0, 123.0)
    assert all(d.watermark == d.matches.watermark == float("-inf") and not d.matches.partitions for d in decoded[:-1])
    assert decoded[-1].matches.partitions == marks and {d.matches.inputs for d in decoded} == {("inference-logs", 2)}
    seen_scores, seen_queries = [], []
    for d in decoded:
        seen_scores += [i for g in d.groups for i in g.event_id]
        seen_queries += [i for g in d.matches.groups for i in g.event_id]
    assert sorted(seen_scores) == sorted(embedded.event_id) and sorted(seen_queries) == sorted(ids)
    owner = {i: n for n, d in enumerate(decoded) for g in [*d.groups, *d.matches.groups] for i in g.event_id}
    for n, d in enumerate(decoded):  # an event's embedding and its query travel in one message, and only there
        assert all(owner[i] == n for g in [*d.groups, *d.matches.groups] for i in g.event_id)
    rows = {i: r for g in request.matches.groups for i, r in zip(g.event_id, g.hashes.tolist(), strict=True)}
    assert all(rows[i] == r for d in decoded for g in d.matches.groups
               for i, r in zip(g.event_id, g.hashes.tolist(), strict=True))


def test_an_empty_request_with_queries_carries_both_watermarks():
    [only] = ScoreRequestBatch("i", 60.0, [], MatchRequestBatch("i", 60.0, [], {"p-0": 60.0})).chunks()
    back = ScoreRequestBatch.decode(only.encode())
    assert (back.watermark, back.matches.watermark, back.matches.partitions) == (60.0, 60.0, {"p-0": 60.0})
