"""The matcher sharded by hash value, in process: shards that each hold the postings of some of the hashes, and a
two-round reduce that gives one matcher's verdicts.

Shard ``s`` of ``S`` (:class:`MatchShard`) takes every query, as :class:`~monitor.detect.matcher.OrderedMatcher`
does, seals the same buckets and matches them in the same event-time order, but indexes only the hashes
``h % S == s`` (by a mixed value: Blacklight keeps each query's largest hashes, so ranges of the value would leave
the lower shards empty). For each sealed group it keeps its part of every (query, earlier query) pair: how many of
its hashes the two share, each hash counted with its ``postings_cap`` latest holders as one index counts it, so the
parts of the shards add up to one index's count (``tests/detect/test_fingerprint.py``). A query is a near-duplicate
of an earlier one where the sum reaches the threshold ``T``, so some shard's part reaches ``ceil(T / S)``:
:class:`MatchReduce` takes those pairs from every shard (round 1), the other shards' parts of each (round 2, asked
of each shard's kept parts), and decides as one index does, down to which other client a query is said to match.
Measured on the realistic records (``bench/sharding.py``): 120-300 bytes a query over both rounds with 2-4 shards.

Every shard must seal the same queries, since a query's id in a shard's index is its place in matching order, and
where a matcher seals depends on its wall clock (a quiet source stops holding the watermark; a query later than the
grace period is matched with the next sealed minute). So the reduce decides each seal (:class:`Seal`: an event time,
and the match-requests offset up to which it has read) and the shards follow the seals in order, with no clock of
their own: a shard that has read further waits with the rest.

Pure. The daemons do not run it yet (docs/scaling.md, issue 17): a shard role, a reduce role, and the seals, the
pairs and the asks between them over Kafka are the next step.

>>> import numpy as np
>>> from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
>>> from monitor.detect.fingerprint import Fingerprinter, content_hashes
>>> from monitor.detect.matcher import MatcherSettings, OrderedMatcher
>>> fp = Fingerprinter.for_dimension(64, secret=b"doc")
>>> rng = np.random.default_rng(1); base = rng.random(64, dtype=np.float32)
>>> x = np.clip(base + rng.normal(0, 0.002, (4, 64)), 0, 1).astype(np.float32)
>>> o = lambda v: np.array([v] * 4, object)
>>> g = MatchGroup("64", fp.threshold, o("m"), np.array([f"e{i}" for i in range(4)], object),
...                np.array([f"key{i}" for i in range(4)], object), np.arange(4.0) + 60, np.zeros(4, np.int8),
...                np.zeros(4, bool), np.ones(4), fp.hashes(x), content_hashes(x))
>>> request = MatchRequestBatch("ingest-0", 130.0, [g])
>>> settings = MatcherSettings(bucket_s=60, grace_s=0)
>>> shards, reduce = [MatchShard(settings, 3, s) for s in range(3)], MatchReduce(settings, 3)
>>> for matcher in (reduce, *shards):
...     matcher.add(request, now=0.0, offset=0)
>>> seal = reduce.decide(now=0.0); seal
Seal(seq=0, until=120.0, through=0)
>>> reduce.reduce(seal, [shard.seal(seal) for shard in shards]).verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
>>> one = OrderedMatcher(settings); one.add(request, now=0.0, offset=0)
>>> one.advance(now=0.0).verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.detect.fingerprint import PairCounts, QueryMatches
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher, match_result


@dataclass(frozen=True)
class Seal:
    """Match every waiting query of an event time before ``until`` that came at or before the match-requests offset
    ``through``: one decision of the reduce, which every shard follows in ``seq`` order."""

    seq: int
    until: float
    through: int


@dataclass(frozen=True)
class ShardPart:
    """One shard's part of one group of a seal (one input kind): which queries were exact repeats, and the shard's
    part of each pair (with the earlier query's client)."""

    kind: str
    duplicate: np.ndarray  # bool, per query of the group, in matching order
    pairs: PairCounts


class MatchShard(OrderedMatcher):
    """An :class:`OrderedMatcher` that indexes only the hashes ``h % shards == shard``, seals only as the reduce
    decides (:meth:`seal`), and gives the pair parts of what it sealed instead of verdicts."""

    def __init__(self, settings: MatcherSettings, shards: int, shard: int) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of {shards}")
        super().__init__(settings)
        self.shards, self.shard = shards, shard
        self._parts: list[ShardPart] = []

    def seal(self, seal: Seal) -> list[ShardPart]:
        """Match what ``seal`` covers; its parts, one per input kind in name order."""
        if self.read_through < seal.through:
            raise ValueError(f"seal {seal.seq} covers match-requests up to {seal.through}; this shard has read up "
                             f"to {self.read_through}")
        self.sealed_until = max(self.sealed_until, seal.until)
        self._match_before(seal.until, seal.through)
        parts, self._parts = self._parts, []
        return parts

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        index = self._index_for(group)
        before = index.position
        mine = np.where(group.hashes % np.uint64(self.shards) == self.shard, group.hashes, np.uint64(0))
        matches, pairs = index.update_with_pairs(mine, group.exact, now=group.ts,
                                                 clients=self._clients.codes(group.client_id))
        self._note_generations(group, offsets, index.generation_openings, before)
        self._parts.append(ShardPart(group.kind, matches.duplicate, pairs))
        return MatchResult.empty()


class MatchReduce(OrderedMatcher):
    """Decides the seals with its clock as one matcher would (:meth:`decide`, :meth:`finish`), keeps what each covers
    (the queries without their hashes), and turns every shard's parts of a seal into one matcher's result
    (:meth:`reduce`)."""

    def __init__(self, settings: MatcherSettings, shards: int) -> None:
        super().__init__(settings)
        self.shards = shards
        self._sealing: list[MatchGroup] = []
        self._sealed: dict[int, list[MatchGroup]] = {}
        self._next_seq = 0
        self.sent = 0  # pairs the shards sent in round 1, so far
        self.asked = 0  # pair parts round 2 asked of them, so far

    def add(self, request: MatchRequestBatch, now: float, offset: int = -1) -> None:
        super().add(replace(request, groups=[replace(g, hashes=g.hashes[:, :0]) for g in request.groups]), now, offset)

    def decide(self, now: float) -> Seal | None:
        """The next seal, where the watermark closed a bucket that holds waiting queries (None: nothing to match)."""
        self.advance(now)
        return self._seal(self.sealed_until)

    def finish(self) -> Seal | None:
        """End of input: a seal of everything waiting."""
        self.flush()
        return self._seal(float("inf"))

    def reduce(self, seal: Seal, parts: Sequence[Sequence[ShardPart]]) -> MatchResult:
        """One matcher's result for ``seal`` from every shard's parts of it (in shard order)."""
        groups = self._sealed.pop(seal.seq)
        if len(parts) != self.shards or any([p.kind for p in mine] != [g.kind for g in groups] for mine in parts):
            raise ValueError(f"seal {seal.seq}: the parts of {len(parts)} shards do not match what it sealed")
        results = [self._reduce(group, [mine[i] for mine in parts]) for i, group in enumerate(groups)]
        return MatchResult.concat(results) if results else MatchResult.empty()

    def _seal(self, until: float) -> Seal | None:
        if not self._sealing:
            return None
        seal = Seal(self._next_seq, until, self.read_through)
        self._sealed[seal.seq], self._sealing, self._next_seq = self._sealing, [], self._next_seq + 1
        return seal

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        self._sealing.append(group)
        self._clients.codes(group.client_id)  # the names of the clients matched: queries of this or earlier groups
        return MatchResult.empty()

    def _reduce(self, group: MatchGroup, parts: Sequence[ShardPart]) -> MatchResult:
        if any(len(p.duplicate) != len(group) for p in parts):
            raise ValueError(f"a shard's part of {group.kind} holds another number of queries than the seal")
        row, earlier, total, owner = self._near_pairs(parts, group.threshold)
        return match_result(group, self._matches(group, parts[0].duplicate, row, earlier, total, owner),
                            self._clients, self.settings.bucket_s)

    def _near_pairs(self, parts: Sequence[ShardPart], threshold: int) -> tuple[np.ndarray, ...]:
        """Round 1: the pairs of which some shard counts at least ``ceil(threshold / shards)``; round 2: every other
        shard's part of those. The pairs whose parts reach ``threshold``: (row, earlier id, count, earlier's client)."""
        least = -(-threshold // len(parts))
        keys = _PairKey.of(parts)
        sent = [keys.of_pairs(p.pairs)[p.pairs.count >= least] for p in parts]
        candidates = np.unique(np.concatenate(sent))
        totals = np.zeros(len(candidates), np.int64)
        owners = np.zeros(len(candidates), np.uint64)
        for part, mine in zip(parts, sent, strict=True):
            self.asked += int((~np.isin(candidates, mine)).sum())
            at, known = _positions(candidates, keys.of_pairs(part.pairs))
            np.add.at(totals, at[known], part.pairs.count[known])
            owners[at[known]] = part.pairs.owner[known]
        self.sent += sum(map(len, sent))
        near = totals >= threshold
        row, earlier = keys.split(candidates[near])
        return row, earlier, totals[near].astype(np.int32), owners[near]

    def _matches(self, group: MatchGroup, duplicate: np.ndarray, row: np.ndarray, earlier: np.ndarray,
                 total: np.ndarray, owner: np.ndarray) -> QueryMatches:
        """The verdicts one index takes from these near pairs: the best count, with the query's own client and with
        another, and that other client (of the best cross pair; among equals, the earliest query's)."""
        n = len(group)
        same = owner == self._clients.codes(group.client_id)[row]
        score, own, cross = (np.zeros(n, np.int32) for _ in range(3))
        np.maximum.at(score, row, total)
        np.maximum.at(own, row[same], total[same])
        np.maximum.at(cross, row[~same], total[~same])
        matched = np.zeros(n, np.uint64)
        pick = np.flatnonzero(~same)
        pick = pick[np.lexsort((earlier[pick], -total[pick], row[pick]))]
        first = np.r_[True, row[pick][1:] != row[pick][:-1]] if len(pick) else np.empty(0, bool)
        matched[row[pick[first]]] = owner[pick[first]]
        return QueryMatches(score, own, cross, matched, duplicate, group.exact, group.threshold)


@dataclass(frozen=True)
class _PairKey:
    """(row, earlier id) as one int64: the row above the bits of the earlier id counted from the lowest of the group."""

    base: int
    shift: int

    @classmethod
    def of(cls, parts: Sequence[ShardPart]) -> _PairKey:
        earlier = np.concatenate([p.pairs.earlier for p in parts])
        base = int(earlier.min()) if len(earlier) else 0
        span = int(earlier.max()) - base if len(earlier) else 0
        shift = max(span, 1).bit_length()
        if shift + max(len(parts[0].duplicate), 1).bit_length() > 63:
            raise ValueError(f"{len(parts[0].duplicate)} queries over {span} earlier ids do not fit one 64-bit key")
        return cls(base, shift)

    def of_pairs(self, pairs: PairCounts) -> np.ndarray:
        return (pairs.row.astype(np.int64) << self.shift) | (pairs.earlier.astype(np.int64) - self.base)

    def split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return keys >> self.shift, (keys & ((1 << self.shift) - 1)) + self.base


def _positions(ordered: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``values`` is in ``ordered`` (sorted, distinct), and whether it is there at all."""
    at = np.searchsorted(ordered, values)
    clipped = np.minimum(at, max(len(ordered) - 1, 0))
    known = (at < len(ordered)) & (ordered[clipped] == values) if len(ordered) else np.zeros(len(values), bool)
    return clipped, known
