"""The matcher sharded by hash value, in process: shards that each hold the postings of some of the hashes, and a
two-round reduce that gives one matcher's verdicts.

Shard ``s`` of ``S`` (:class:`MatchShard`) takes every query, as :class:`~monitor.detect.matcher.OrderedMatcher`
does, seals the same buckets and matches them in the same event-time order, but indexes only the hashes
``h % S == s`` (by a mixed value: Blacklight keeps each query's largest hashes, so ranges of the value would leave
the lower shards empty). For each sealed group it keeps its part of every (query, earlier query) pair: how many of
its hashes the two share, each hash counted with its ``postings_cap`` latest holders as one index counts it, so the
parts of the shards add up to one index's count (``tests/detect/test_fingerprint.py``). A query is a near-duplicate
of an earlier one where the sum reaches the threshold ``T``, so some shard's part reaches ``ceil(T / S)``:
:class:`MatchReduce` takes those pairs from every shard (round 1), asks the other shards for their parts of each
(round 2: each shard keeps a seal's parts until it has answered), and decides as one index does, down to which other
client a query is said to match. The messages are :mod:`monitor.contracts.match_shards`.
Measured on the realistic records (``bench/sharding.py``): 120-300 bytes a query over both rounds with 2-4 shards.

Every shard must seal the same queries, since a query's id in a shard's index is its place in matching order, and
where a matcher seals depends on its wall clock (a quiet source stops holding the watermark; a query later than the
grace period is matched with the next sealed minute). So the reduce decides each seal (:class:`Seal`: an event time,
and the match-requests offset up to which it has read) and the shards follow the seals in order, with no clock of
their own: a shard that has read further waits with the rest.

Pure. The daemons do not run it yet (docs/scaling.md, issue 17): a shard role and a reduce role passing these
messages over Kafka are the next step.

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
Seal(seq=0, until=120.0, through=0, limit=None)
>>> asks = [a for shard in shards for a in reduce.take_pairs(shard.seal(seal))]   # round 1
>>> [result] = [r for a in asks if (r := reduce.take_answers(shards[a.shard].answer(a))) is not None]  # round 2
>>> result.verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
>>> one = OrderedMatcher(settings); one.add(request, now=0.0, offset=0)
>>> one.advance(now=0.0).verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from monitor.contracts.columns import sorted_positions
from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.contracts.match_shards import KindPairs, PairAnswers, PairAsks, Seal, ShardPairs
from monitor.detect.fingerprint import QueryMatches, near_pair_verdicts
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher, match_result

__all__ = ["MatchReduce", "MatchShard", "Seal"]


def least_part(threshold: int, shards: int) -> int:
    """The count some shard's part of a pair reaches where the parts of ``shards`` shards sum to ``threshold``."""
    return -(-threshold // shards)


class MatchShard(OrderedMatcher):
    """An :class:`OrderedMatcher` that indexes only the hashes ``h % shards == shard``, seals only as the reduce
    decides (:meth:`seal`: round 1), keeps each seal's pair parts and answers the reduce's asks (:meth:`answer`)."""

    def __init__(self, settings: MatcherSettings, shards: int, shard: int) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of {shards}")
        super().__init__(settings)
        self.shards, self.shard = shards, shard
        self._sealing: list[tuple[KindPairs, int]] = []  # every pair of each kind sealed, and its threshold
        self._kept: dict[int, dict[str, KindPairs]] = {}  # seal -> kind -> every pair, until asked

    def seal(self, seal: Seal) -> ShardPairs:
        """Match what ``seal`` covers; round 1: the pairs of which this shard counts enough to matter alone."""
        if self.read_through < seal.through:
            raise ValueError(f"seal {seal.seq} covers match-requests up to {seal.through}; this shard has read up "
                             f"to {self.read_through}")
        self.sealed_until = max(self.sealed_until, seal.until)
        self._match_before(seal.until, seal.through, seal.limit)
        sealed, self._sealing = self._sealing, []
        self._kept[seal.seq] = {pairs.kind: pairs for pairs, _ in sealed}
        return ShardPairs(seal.seq, self.shard, [pairs.take(pairs.count >= least_part(threshold, self.shards))
                                                 for pairs, threshold in sealed])

    def answer(self, asks: PairAsks) -> PairAnswers:
        """This shard's count of each asked pair (0: it has none); the seal's parts are forgotten."""
        kept = self._kept.pop(asks.seq, None)
        if kept is None:
            raise ValueError(f"shard {self.shard} holds no parts of seal {asks.seq}: it answered it, or never "
                             "sealed it")
        counts = []
        for kind, row, earlier in asks.kinds:
            mine = kept[kind]
            at, known = sorted_positions(_keys(mine.row, mine.earlier), _keys(row, earlier))
            counts.append((kind, np.where(known, mine.count[at] if len(mine.count) else 0, 0).astype(np.int32)))
        return PairAnswers(asks.seq, self.shard, counts)

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        index = self._index_for(group)
        before = index.position
        mine = np.where(group.hashes % np.uint64(self.shards) == self.shard, group.hashes, np.uint64(0))
        matches, pairs = index.update_with_pairs(mine, group.exact, now=group.ts,
                                                 clients=self._clients.codes(group.client_id))
        self._note_generations(group, offsets, index.generation_openings, before)
        self._sealing.append((KindPairs(group.kind, matches.duplicate, pairs.row, pairs.earlier, pairs.count,
                                        pairs.owner), group.threshold))  # in key order: asks are binary searches
        return MatchResult.empty()


@dataclass
class _Candidates:
    """One kind of a seal between the rounds: the candidate pairs (sorted keys), their counts so far, the earlier
    queries' clients, and which candidates each shard is asked for."""

    group: MatchGroup
    duplicate: np.ndarray
    keys: np.ndarray
    totals: np.ndarray
    owners: np.ndarray
    asked: dict[int, np.ndarray]  # shard -> positions in ``keys``


class MatchReduce(OrderedMatcher):
    """Decides the seals with its clock as one matcher would (:meth:`decide`, :meth:`finish`), keeps what each covers
    (the queries without their hashes), asks each shard for what round 1 left out (:meth:`take_pairs`) and turns the
    answers into one matcher's result (:meth:`take_answers`)."""

    def __init__(self, settings: MatcherSettings, shards: int, seal_limit: int | None = None) -> None:
        super().__init__(settings)
        self.shards = shards
        self.seal_limit = seal_limit  # the most queries one seal covers (None: all that are due)
        self._sealing: list[MatchGroup] = []
        self._sealed: dict[int, list[MatchGroup]] = {}  # seal -> its groups, until every shard's round 1 is in
        self._round_one: dict[int, dict[int, ShardPairs]] = {}
        self._round_two: dict[int, tuple[list[_Candidates], set[int]]] = {}  # seal -> kinds, shards yet to answer
        self._next_seq = 0
        self.sent = 0  # pairs the shards sent in round 1, so far
        self.asked = 0  # pairs round 2 asked them for, so far

    @property
    def seals(self) -> int:
        """Seals decided so far."""
        return self._next_seq

    @property
    def open_seals(self) -> int:
        """Seals decided and not yet reduced."""
        return len(self._sealed) + len(self._round_two)

    def add(self, request: MatchRequestBatch, now: float, offset: int = -1) -> None:
        super().add(replace(request, groups=[replace(g, hashes=g.hashes[:, :0]) for g in request.groups]), now, offset)

    def decide(self, now: float) -> Seal | None:
        """The next seal, where the watermark closed a bucket that holds waiting queries (None: nothing to match).
        With ``seal_limit``, call again until None: each seal covers at most that many queries, so that what a
        shard keeps between the rounds stays bounded however busy a minute was."""
        return self._seal(self.closed_until(now))

    def finish(self) -> Seal | None:
        """End of input: the next seal of what is still waiting (call again until None)."""
        return self._seal(float("inf"))

    def take_pairs(self, pairs: ShardPairs) -> list[PairAsks]:
        """A shard's round 1. Once every shard's is in: round 2, one ask to each shard (empty ones too: a shard
        forgets a seal's parts when it answers). A round 1 taken before is ignored."""
        if pairs.seq not in self._sealed:
            return []
        received = self._round_one.setdefault(pairs.seq, {})
        received[pairs.shard] = pairs
        if len(received) < self.shards:
            return []
        del self._round_one[pairs.seq]
        groups = self._sealed.pop(pairs.seq)
        if any(len(received[s].kinds) != len(groups) for s in range(self.shards)):
            raise ValueError(f"seal {pairs.seq}: a shard's round 1 holds other kinds than the seal covered")
        kinds = [self._candidates(group, [received[s].kinds[i] for s in range(self.shards)])
                 for i, group in enumerate(groups)]
        self._round_two[pairs.seq] = (kinds, set(range(self.shards)))
        return [PairAsks(pairs.seq, s, [(c.group.kind, *_split(c.keys[c.asked[s]])) for c in kinds])
                for s in range(self.shards)]

    def take_answers(self, answers: PairAnswers) -> MatchResult | None:
        """A shard's round 2; once every shard has answered, one matcher's result for the seal. An answer taken before
        is ignored."""
        kinds, waiting = self._round_two.get(answers.seq, ([], set()))
        if answers.shard not in waiting:
            return None
        for candidates, (kind, counts) in zip(kinds, answers.kinds, strict=True):
            if kind != candidates.group.kind or len(counts) != len(candidates.asked[answers.shard]):
                raise ValueError(f"seal {answers.seq}: shard {answers.shard} answered other pairs than it was asked")
            np.add.at(candidates.totals, candidates.asked[answers.shard], counts)
        waiting.discard(answers.shard)
        if waiting:
            return None
        del self._round_two[answers.seq]
        results = [self._result(c) for c in kinds]
        return MatchResult.concat(results) if results else MatchResult.empty()

    def _seal(self, until: float) -> Seal | None:
        self._match_before(until, limit=self.seal_limit)
        if not self._sealing:
            return None
        seal = Seal(self._next_seq, until, self.read_through, self.seal_limit)
        self._sealed[seal.seq], self._sealing, self._next_seq = self._sealing, [], self._next_seq + 1
        return seal

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        self._sealing.append(group)
        self._clients.codes(group.client_id)  # the names of the clients matched: queries of this or earlier groups
        return MatchResult.empty()

    def _candidates(self, group: MatchGroup, parts: list[KindPairs]) -> _Candidates:
        """Round 1 of one kind: every pair some shard sent, with the sum of what was sent."""
        if any(p.kind != group.kind or len(p.duplicate) != len(group) for p in parts):
            raise ValueError(f"the shards' round 1 of {group.kind} does not match what the seal covered")
        sent = [_keys(p.row, p.earlier) for p in parts]
        keys = np.unique(np.concatenate(sent))
        totals, owners = np.zeros(len(keys), np.int64), np.zeros(len(keys), np.uint64)
        asked = {}
        for shard, (part, mine) in enumerate(zip(parts, sent, strict=True)):
            at = np.searchsorted(keys, mine)
            np.add.at(totals, at, part.count)
            owners[at] = part.owner
            asked[shard] = np.flatnonzero(~np.isin(keys, mine))
            self.asked += len(asked[shard])
        self.sent += sum(map(len, sent))
        return _Candidates(group, parts[0].duplicate, keys, totals, owners, asked)

    def _result(self, c: _Candidates) -> MatchResult:
        near = c.totals >= c.group.threshold
        row, earlier = _split(c.keys[near])
        matches = self._matches(c.group, c.duplicate, row, earlier, c.totals[near].astype(np.int32), c.owners[near])
        return match_result(c.group, matches, self._clients, self.settings.bucket_s)

    def _matches(self, group: MatchGroup, duplicate: np.ndarray, row: np.ndarray, earlier: np.ndarray,
                 total: np.ndarray, owner: np.ndarray) -> QueryMatches:
        """The verdicts one index takes from these near pairs (:func:`near_pair_verdicts`)."""
        score = np.zeros(len(group), np.int32)
        np.maximum.at(score, row, total)
        mine = self._clients.codes(group.client_id)[row]
        own, cross, matched = near_pair_verdicts(len(group), row, earlier, total, owner, mine)
        return QueryMatches(score, own, cross, matched, duplicate, group.exact, group.threshold)


#: Bits of an earlier query's id in a pair key (ids count the queries an index stored: 2**40 is a trillion).
_ID_BITS = 40


def _keys(row: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """(query row, earlier id) pairs as one sortable int64 each."""
    row, earlier = np.asarray(row, np.int64), np.asarray(earlier, np.int64)
    if len(row) and (row.max() >= 1 << (63 - _ID_BITS) or earlier.max() >= 1 << _ID_BITS):
        raise ValueError(f"a seal of {row.max() + 1} queries over {earlier.max() + 1} stored queries does not fit "
                         "the pair keys")
    return (row << _ID_BITS) | earlier


def _split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return keys >> _ID_BITS, keys & ((1 << _ID_BITS) - 1)
