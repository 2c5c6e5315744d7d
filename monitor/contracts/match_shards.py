"""The messages between the reduce and the shards of a matcher sharded by hash (:mod:`monitor.detect.sharded_matcher`).

- :class:`Seal` (reduce -> every shard): match the waiting queries that come before the :class:`MatchKey` ``before``
  in matching order and came at or before the match-requests offset ``through``; ``seq`` numbers the seals, which
  every shard follows in order. Both bounds only grow from seal to seal, so what the seals up to one have covered
  is that seal's bounds alone (:meth:`Seal.covers`): a restarted shard or reduce knows what it had matched from
  the last seal it followed.
- :class:`ShardPairs` (shard -> reduce, round 1): per input kind of a seal, which of its queries were exact repeats,
  and the (query, earlier query) pairs of which the shard counts at least ``ceil(threshold / shards)`` hashes, with
  the count and the earlier query's client.
- :class:`PairAsks` (reduce -> one shard, round 2): the candidate pairs that shard did not send.
- :class:`PairAnswers` (shard -> reduce): its count of each asked pair (0: none), in the order asked.

Queries are rows of the seal's group of their kind (matching order); an earlier query is named by its position in
its kind's matching order, which every shard numbers alike. Binary: a JSON header, then the arrays (framing of
:mod:`monitor.contracts.framing`). Seals and asks travel on one topic (``match-control``), round 1 and answers on
another (``match-pairs``): :func:`decode_control` and :func:`decode_reply` tell them apart by the header's type.

>>> import numpy as np
>>> pairs = KindPairs("64", np.array([False, True]), np.array([1]), np.array([0]), np.array([9], np.int32),
...                   np.array([77], np.uint64))
>>> back = ShardPairs.decode(ShardPairs(3, 1, [pairs]).encode())
>>> back.seq, back.shard, back.kinds[0].duplicate.tolist(), back.kinds[0].count.tolist()
(3, 1, [False, True], [9])
>>> seal = Seal(4, 17, MatchKey(120.0))
>>> decode_control(seal.encode()) == seal, seal.before < MatchKey(120.0, "e1")
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from monitor.contracts.framing import FrameReader, framed, refusing
from monitor.contracts.match_requests import MatchGroup
from monitor.errors import WireError

VERSION = 2


@dataclass(frozen=True, order=True)
class MatchKey:
    """A query's place in matching order over every input kind: (event time, event id, content hash, kind).
    ``MatchKey(t)`` comes before every query of event time ``t`` and after every earlier one."""

    ts: float
    event_id: str = ""
    exact: int = 0
    kind: str = ""

    @classmethod
    def of(cls, group: MatchGroup, row: int) -> MatchKey:
        return cls(float(group.ts[row]), str(group.event_id[row]), int(group.exact[row]), group.kind)

    def after(self, group: MatchGroup) -> np.ndarray:
        """Which of the group's queries come before this key (bool, one per query)."""
        out = group.ts < self.ts
        tie = np.flatnonzero(group.ts == self.ts)
        if len(tie):
            ids, exact, mark = group.event_id[tie].astype(str), group.exact[tie], np.uint64(self.exact)
            last = (exact < mark) | ((exact == mark) & (group.kind < self.kind))
            out[tie] = (ids < self.event_id) | ((ids == self.event_id) & last)
        return out

    def to_list(self) -> list[Any]:
        return [self.ts if math.isfinite(self.ts) else None, self.event_id, self.exact, self.kind]

    @classmethod
    def from_list(cls, values: list[Any]) -> MatchKey:
        ts, event_id, exact, kind = values
        return cls(math.inf if ts is None else float(ts), str(event_id), int(exact), str(kind))


@dataclass(frozen=True)
class Seal:
    """Match the waiting queries that come before ``before`` in matching order and came at or before the
    match-requests offset ``through``: one decision of the reduce, which every shard follows in ``seq`` order."""

    seq: int
    through: int
    before: MatchKey

    def covers(self, group: MatchGroup, offsets: np.ndarray) -> np.ndarray:
        """Which of the group's queries (that came at ``offsets``) this seal or an earlier one matched."""
        return (offsets <= self.through) & self.before.after(group)

    def encode(self) -> bytes:
        return framed({"v": VERSION, "t": "seal", **self.header()}, [])

    def header(self) -> dict[str, Any]:
        """Its fields as JSON values (:meth:`from_header` reads them back)."""
        return {"seq": self.seq, "through": self.through, "before": self.before.to_list()}

    @classmethod
    def decode(cls, data: bytes) -> Seal:
        with refusing("match seal"):
            frame = FrameReader(data, "match seal", VERSION)
            frame.end()
            return cls.from_header(frame.header)

    @classmethod
    def from_header(cls, h: dict[str, Any]) -> Seal:
        return cls(int(h["seq"]), int(h["through"]), MatchKey.from_list(h["before"]))


@dataclass(frozen=True)
class KindPairs:
    """One input kind's queries of a seal, as one shard saw them: which were exact repeats, and pairs."""

    kind: str
    duplicate: np.ndarray  # bool, one per query of the seal's group of this kind
    row: np.ndarray  # int64: the query's row in that group
    earlier: np.ndarray  # int64: the earlier query's position in its kind's matching order
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
        header = {"v": VERSION, "t": "pairs", "seq": self.seq, "shard": self.shard,
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
        return _encode_columns("asks", self.seq, self.shard, self.kinds, ("<i8", "<i8"))

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
        return _encode_columns("answers", self.seq, self.shard, self.kinds, ("<i4",))

    @classmethod
    def decode(cls, data: bytes) -> PairAnswers:
        seq, shard, kinds = _decode_columns(data, "match answers", ("<i4",))
        if any((count < 0).any() for _, count in kinds):
            raise WireError("match answers hold a negative count")
        return cls(seq, shard, [(kind, count.astype(np.int32)) for kind, count in kinds])


def _encode_columns(tag: str, seq: int, shard: int, kinds: Sequence[tuple], dtypes: tuple[str, ...]) -> bytes:
    """A seal's per-kind columns of equal length (``kinds``: the kind's name, then one array per dtype)."""
    header = {"v": VERSION, "t": tag, "seq": seq, "shard": shard,
              "kinds": [{"kind": k[0], "pairs": len(k[1])} for k in kinds]}
    return framed(header, [np.asarray(column, dtype).tobytes() for k in kinds
                           for column, dtype in zip(k[1:], dtypes, strict=True)])


def _decode_columns(data: bytes, name: str, dtypes: tuple[str, ...]) -> tuple[int, int, list[tuple]]:
    with refusing(name):
        frame = FrameReader(data, name, VERSION)
        kinds = [(str(k["kind"]), *(frame.array(dtype, int(k["pairs"])) for dtype in dtypes))
                 for k in frame.header["kinds"]]
        frame.end()
        return int(frame.header["seq"]), int(frame.header["shard"]), kinds


def decode_control(data: bytes) -> Seal | PairAsks:
    """A ``match-control`` message: a seal or a shard's asks."""
    return _by_type(data, {"seal": Seal, "asks": PairAsks}, "match control")


def decode_reply(data: bytes) -> ShardPairs | PairAnswers:
    """A ``match-pairs`` message: a shard's round 1 or its answers."""
    return _by_type(data, {"pairs": ShardPairs, "answers": PairAnswers}, "match pairs topic")


def _by_type(data: bytes, types: dict[str, Any], name: str) -> Any:
    with refusing(name):
        tag = FrameReader(data, name, VERSION).header["t"]
    if tag not in types:
        raise WireError(f"a {name} message of type {tag!r}; expected one of {sorted(types)}")
    return types[tag].decode(data)
