"""The messages between the sharded matcher's reduce and shards: what one side encodes the other decodes, and a
malformed one is a WireError that says which message."""

import math

import numpy as np
import pytest

from monitor.contracts.match_shards import (
    KindPairs,
    MatchKey,
    PairAnswers,
    PairAsks,
    Seal,
    ShardPairs,
    decode_control,
    decode_reply,
)
from monitor.errors import WireError


def pairs() -> ShardPairs:
    rng = np.random.default_rng(0)
    kinds = [KindPairs(kind, rng.random(n) < 0.2, np.sort(rng.integers(0, n, m)), rng.integers(0, 2**40, m),
                       rng.integers(1, 30, m).astype(np.int32), rng.integers(1, 2**63, m, dtype=np.uint64))
             for kind, n, m in (("64", 13, 40), ("text", 9, 0))]
    return ShardPairs(7, 2, kinds)


def asks_message() -> PairAsks:
    return PairAsks(7, 1, [("64", np.array([0, 5]), np.array([3, 2**39]))])


def test_every_message_round_trips():
    sent = pairs()
    back = ShardPairs.decode(sent.encode())
    assert (back.seq, back.shard, [k.kind for k in back.kinds]) == (7, 2, ["64", "text"])
    for a, b in zip(sent.kinds, back.kinds, strict=True):
        for name in ("duplicate", "row", "earlier", "count", "owner"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    asks = PairAsks.decode(asks_message().encode())
    assert asks.kinds[0][0] == "64" and asks.kinds[0][2].tolist() == [3, 2**39]
    answers = PairAnswers.decode(PairAnswers(7, 1, [("64", np.array([4, 0], np.int32))]).encode())
    assert (answers.seq, answers.shard, answers.kinds[0][1].tolist()) == (7, 1, [4, 0])
    for seal in (Seal(3, 12, MatchKey(math.inf)), Seal(3, 12, MatchKey(120.0, "e9", 2**64 - 1, "text"))):
        assert Seal.decode(seal.encode()) == seal and decode_control(seal.encode()) == seal
    assert isinstance(decode_control(asks_message().encode()), PairAsks)
    assert isinstance(decode_reply(pairs().encode()), ShardPairs)
    assert isinstance(decode_reply(PairAnswers(7, 1, []).encode()), PairAnswers)


@pytest.mark.parametrize("kind, data, reason", [
    (ShardPairs, pairs().encode()[:-3], "invalid match pairs message"),
    (ShardPairs, pairs().encode() + b"x", "match pairs message has 1 trailing bytes"),
    (Seal, Seal(1, 0, MatchKey(60.0)).encode().replace(b'"v":2', b'"v":3'), "match seal version 3"),
    (decode_control, pairs().encode(), "match control message of type 'pairs'"),
    (decode_reply, Seal(1, 0, MatchKey(60.0)).encode(), "match pairs topic message of type 'seal'"),
    (PairAnswers, PairAnswers(1, 0, [("64", np.array([-1], np.int32))]).encode(), "negative count"),
    (PairAsks, PairAsks(1, 0, [("64", np.array([1]), np.array([2]))]).encode()[:-1], "invalid match asks message"),
])
def test_a_malformed_message_is_a_wire_error_naming_it(kind, data, reason):
    with pytest.raises(WireError, match=reason):
        getattr(kind, "decode", kind)(data)
