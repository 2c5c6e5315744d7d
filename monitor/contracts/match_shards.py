"""The messages between the reduce and the shards of a matcher sharded by hash (:mod:`monitor.detect.sharded_matcher`).

- :class:`Seal` (reduce -> every shard): match the waiting queries of event times before ``until`` that came at or
  before the match-requests offset ``through``, at most ``limit`` of them (the first in matching order); ``seq``
  numbers the seals, which every shard follows in order.
- :class:`ShardPairs` (shard -> reduce, round 1): per input kind of a seal, which of its queries were exact repeats,
  and the (query, earlier query) pairs of which the shard counts at least ``ceil(threshold / shards)`` hashes, with
  the count and the earlier query's client.
- :class:`PairAsks` (reduce -> one shard, round 2): the candidate pairs that shard did not send.
- :class:`PairAnswers` (shard -> reduce): its count of each asked pair (0: none), in the order asked.

Queries are rows of the seal's group of their kind (matching order); earlier queries are ids in the shard's index,
which every shard numbers alike. Binary: a JSON header, then the arrays (framing of :mod:`monitor.contracts.framing`).

>>> import numpy as np
>>> pairs = KindPairs("64", np.array([False, True]), np.array([1]), np.array([0]), np.array([9], np.int32),
...                   np.array([77], np.uint64))
>>> back = ShardPairs.decode(ShardPairs(3, 1, [pairs]).encode())
>>> back.seq, back.shard, back.kinds[0].duplicate.tolist(), back.kinds[0].count.tolist()
(3, 1, [False, True], [9])
>>> Seal.decode(Seal(4, float("inf"), 17, 50_000).encode())
Seal(seq=4, until=inf, through=17, limit=50000)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from monitor.contracts.framing import FrameReader, framed, refusing
from monitor.errors import WireError

VERSION = 1


@dataclass(frozen=True)
class Seal:
    """Match the waiting queries of event times before ``until`` that came at or before the match-requests offset
    ``through``, at most ``limit`` of them (None: all): one decision of the reduce, which every shard follows in
    ``seq`` order."""

    seq: int
    until: float
    through: int
    limit: int | None = None

    def encode(self) -> bytes:
        return framed({"v": VERSION, "seq": self.seq, "until": self.until if math.isfinite(self.until) else None,
                       "through": self.through, "limit": self.limit}, [])

    @classmethod
    def decode(cls, data: bytes) -> Seal:
        with refusing("match seal"):
            frame = FrameReader(data, "match seal", VERSION)
            frame.end()
            h = frame.header
            limit = None if h["limit"] is None else int(h["limit"])
            if limit is not None and limit < 1:
                raise WireError(f"match seal {h['seq']} limits a seal to {limit} queries")
            return cls(int(h["seq"]), math.inf if h["until"] is None else float(h["until"]), int(h["through"]), limit)


@dataclass(frozen=True)
class KindPairs:
    """One input kind's queries of a seal, as one shard saw them: which were exact repeats, and pairs."""

    kind: str
    duplicate: np.ndarray  # bool, one per query of the seal's group of this kind
    row: np.ndarray  # int64: the query's row in that group
    earlier: np.ndarray  # int64: the earlier query's id in the index
    count: np.ndarray  # int32: hashes of this shard the two share
    owner: np.ndarray  # uint64: the earlier query's client code

    def take(self, pairs: np.ndarray) -> KindPairs:
        """Some of the pairs (indices or a mask), with every query's repeat flag."""
        return KindPairs(self.kind, self.duplicate, *(getattr(self, f.name)[pairs] for f in fields(self)[2:]))


@dataclass(frozen=True)
class ShardPairs:
    """Round 1: what one shard sends of a seal."""

    seq: int
    shard: int
    kinds: list[KindPairs]

    def encode(self) -> bytes:
        header = {"v": VERSION, "seq": self.seq, "shard": self.shard,
                  "kinds": [{"kind": k.kind, "n": len(k.duplicate), "pairs": len(k.row)} for k in self.kinds]}
        blobs = [blob for k in self.kinds for blob in (
            np.packbits(k.duplicate).tobytes(), np.asarray(k.row, "<i8").tobytes(),
            np.asarray(k.earlier, "<i8").tobytes(), np.asarray(k.count, "<i4").tobytes(),
            np.asarray(k.owner, "<u8").tobytes())]
        return framed(header, blobs)

    @classmethod
    def decode(cls, data: bytes) -> ShardPairs:
        with refusing("match pairs"):
            frame = FrameReader(data, "match pairs", VERSION)
            kinds = []
            for k in frame.header["kinds"]:
                n, m = int(k["n"]), int(k["pairs"])
                duplicate = np.unpackbits(frame.array(np.uint8, (n + 7) // 8), count=n).astype(bool)
                kinds.append(KindPairs(str(k["kind"]), duplicate, frame.array("<i8", m).astype(np.int64),
                                       frame.array("<i8", m).astype(np.int64), frame.array("<i4", m).astype(np.int32),
                                       frame.array("<u8", m).astype(np.uint64)))
            frame.end()
            return cls(int(frame.header["seq"]), int(frame.header["shard"]), kinds)


@dataclass(frozen=True)
class PairAsks:
    """Round 2: the pairs one shard is asked for, per input kind (rows and earlier ids)."""

    seq: int
    shard: int
    kinds: list[tuple[str, np.ndarray, np.ndarray]]

    def encode(self) -> bytes:
        return _encode_columns(self.seq, self.shard, self.kinds, ("<i8", "<i8"))

    @classmethod
    def decode(cls, data: bytes) -> PairAsks:
        seq, shard, kinds = _decode_columns(data, "match asks", ("<i8", "<i8"))
        return cls(seq, shard, [(kind, row.astype(np.int64), earlier.astype(np.int64)) for kind, row, earlier in kinds])


@dataclass(frozen=True)
class PairAnswers:
    """A shard's count of each pair it was asked for, per input kind, in the order asked."""

    seq: int
    shard: int
    kinds: list[tuple[str, np.ndarray]]

    def encode(self) -> bytes:
        return _encode_columns(self.seq, self.shard, self.kinds, ("<i4",))

    @classmethod
    def decode(cls, data: bytes) -> PairAnswers:
        seq, shard, kinds = _decode_columns(data, "match answers", ("<i4",))
        if any((count < 0).any() for _, count in kinds):
            raise WireError("match answers hold a negative count")
        return cls(seq, shard, [(kind, count.astype(np.int32)) for kind, count in kinds])


def _encode_columns(seq: int, shard: int, kinds: Sequence[tuple], dtypes: tuple[str, ...]) -> bytes:
    """A seal's per-kind columns of equal length (``kinds``: the kind's name, then one array per dtype)."""
    header = {"v": VERSION, "seq": seq, "shard": shard, "kinds": [{"kind": k[0], "pairs": len(k[1])} for k in kinds]}
    return framed(header, [np.asarray(column, dtype).tobytes() for k in kinds
                           for column, dtype in zip(k[1:], dtypes, strict=True)])


def _decode_columns(data: bytes, name: str, dtypes: tuple[str, ...]) -> tuple[int, int, list[tuple]]:
    with refusing(name):
        frame = FrameReader(data, name, VERSION)
        kinds = [(str(k["kind"]), *(frame.array(dtype, int(k["pairs"])) for dtype in dtypes))
                 for k in frame.header["kinds"]]
        frame.end()
        return int(frame.header["seq"]), int(frame.header["shard"]), kinds
