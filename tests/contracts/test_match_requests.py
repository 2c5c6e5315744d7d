"""match-requests messages: every row and the watermark arrive, in messages under Kafka's limit; garbage is
refused with a WireError (the matcher dead-letters it)."""

import numpy as np
import pytest

from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.errors import WireError


def test_match_requests_travel_in_chunks_with_every_row_and_reject_garbage():
    rng = np.random.default_rng(1)
    n = 4096
    group = MatchGroup("64", 15, np.full(n, "m", object), np.array([f"e{i}" for i in range(n)], object),
                       np.array([f"c{i % 7}" for i in range(n)], object), rng.random(n) * 60,
                       np.zeros(n, np.int8), rng.random(n) < 0.1, rng.random(n),
                       rng.integers(0, 2**63, (n, 30), dtype=np.uint64), rng.integers(0, 2**63, n, dtype=np.uint64))
    request = MatchRequestBatch("ingest-0", 59.0, [group])
    assert len(request.encode()) > 1 << 20
    chunks = [MatchRequestBatch.decode(c.encode()) for c in request.chunks()]
    assert len(chunks) >= 3 and all(len(c.encode()) <= 600 * 1024 for c in chunks)
    assert [c.watermark for c in chunks] == [float("-inf")] * (len(chunks) - 1) + [59.0]
    back = MatchGroup.concat([g for c in chunks for g in c.groups])
    assert np.array_equal(back.hashes, group.hashes) and np.array_equal(back.exact, group.exact)
    assert back.event_id.tolist() == group.event_id.tolist() and back.threshold == 15
    for garbage in (b"", b"\x00\x00\x00\x02{}", request.encode() + b"x"):
        with pytest.raises(WireError):
            MatchRequestBatch.decode(garbage)
