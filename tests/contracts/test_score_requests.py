"""score-requests messages stay under Kafka's message limit however large the ingest batch."""

import numpy as np

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

