"""margin-counts messages: every cell arrives, in messages under Kafka's limit; garbage is refused with a WireError."""

import numpy as np
import pytest

from monitor.contracts.margin_counts import MarginCounts, MarginCountsBatch
from monitor.errors import WireError


def part(n, model="m", seed=0):
    rng = np.random.default_rng(seed)
    return MarginCounts(model, ("1", "7", "9"), rng.integers(0, 10**9, n) * 60, rng.integers(0, 3, n),
                        rng.integers(0, 8, n), rng.integers(0, 40, n), rng.integers(1, 50, n).astype(float))


def test_margin_counts_travel_in_chunks_with_every_cell_and_refuse_garbage():
    message = MarginCountsBatch("ingest-0-ab12", [part(50_000), part(5, "other", seed=1)])
    assert len(message.encode()) > 1 << 20
    chunks = [MarginCountsBatch.decode(c.encode()) for c in message.chunks()]
    assert len(chunks) == 3 and all(len(c.encode()) <= 600 * 1024 for c in chunks)
    assert {c.sender for c in chunks} == {"ingest-0-ab12"}
    for model, sent in (("m", message.parts[0]), ("other", message.parts[1])):
        got = [p for c in chunks for p in c.parts if p.model == model]
        for column in ("bucket", "label", "band", "bin", "count"):
            assert np.array_equal(np.concatenate([getattr(p, column) for p in got]), getattr(sent, column)), column
        assert all(p.labels == sent.labels for p in got)
    wrong_class = MarginCountsBatch("w", [MarginCounts("m", ("1",), *(np.ones(1, np.int64),) * 4, np.ones(1))])
    for garbage in (b"", b"\x00\x00\x00\x02{}", message.encode() + b"x", wrong_class.encode()):
        with pytest.raises(WireError):
            MarginCountsBatch.decode(garbage)
