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

Every shard must seal the same queries, since an earlier query is named by its place in matching order, and where a
matcher seals depends on its wall clock (a quiet source stops holding the watermark; a query later than the grace
period is matched with the next sealed minute). So the reduce decides each seal (:class:`Seal`: the key in matching
order before which it ends, and the match-requests offset up to which it has read) and the shards follow the seals in
order, with no clock of their own: a shard that has read further waits with the rest. Both bounds only grow, so what
every seal up to one covered is that seal alone: a restarted shard or reduce rebuilds from the requests, the seals and
a small checkpoint (:class:`ShardCheckpoint`, :class:`ReduceCheckpoint`), as the matcher does.

Pure. The daemons (:mod:`streams.match_shards`) pass these messages over Kafka.

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
Seal(seq=0, through=0, before=MatchKey(ts=120.0, event_id='', exact=0, kind=''))
>>> asks = [a for shard in shards for a in reduce.take_pairs(shard.seal(seal))]   # round 1
>>> [result] = [r for a in asks if (r := reduce.take_answers(shards[a.shard].answer(a))) is not None]  # round 2
>>> result.verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
>>> one = OrderedMatcher(settings); one.add(request, now=0.0, offset=0)
>>> one.advance(now=0.0).verdicts.matched_client.tolist()
['', 'key0', 'key0', 'key0']
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from monitor.contracts.columns import sorted_positions
from monitor.contracts.framing import refusing
from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.contracts.match_shards import KindPairs, MatchKey, PairAnswers, PairAsks, Seal, ShardPairs
from monitor.detect.fingerprint import QueryMatches, near_pair_verdicts
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher, _finite, _infinite, match_result

__all__ = ["MatchReduce", "MatchShard", "ReduceCheckpoint", "Seal", "ShardCheckpoint"]

#: An opener: the seal that matched the first query of a kind's oldest live generation, that query's key, its
#: position in the kind's matching order and its id in the index.
Opener = tuple[int, MatchKey, int, int]


def least_part(threshold: int, shards: int) -> int:
    """The count some shard's part of a pair reaches where the parts of ``shards`` shards sum to ``threshold``."""
    return -(-threshold // shards)


@dataclass(frozen=True)
class ShardCheckpoint:
    """What a restarted shard needs besides ``match-requests`` (from ``replay_from``) and ``match-control`` (from
    ``control_from``, where the seal ``start`` came) to be what it was: the seal before ``start`` (what it and the
    seals before it covered stays matched) and, per kind, the :data:`Opener` its index starts again from. Small:
    it travels as the metadata of the offsets the shard commits.

    >>> c = ShardCheckpoint(10, 3, 57, Seal(2, 9, MatchKey(120.0)), {"64": (1, MatchKey(61.5, "e7", 9, "64"), 40, 38)})
    >>> ShardCheckpoint.from_json(c.to_json()) == c, ShardCheckpoint.from_json("")
    (True, None)
    """

    replay_from: int
    start: int
    control_from: int  # -1: no seal from ``start`` on was read
    prior: Seal | None
    openers: dict[str, Opener]

    def to_json(self) -> str:
        return orjson.dumps({"v": 1, "from": self.replay_from, "start": self.start, "control": self.control_from,
                             "prior": _seal_doc(self.prior),
                             "openers": {kind: [seq, key.to_list(), position, first]
                                         for kind, (seq, key, position, first) in self.openers.items()}}).decode()

    @classmethod
    def from_json(cls, text: str) -> ShardCheckpoint | None:
        """None for no checkpoint (the empty metadata of a first start)."""
        if not text:
            return None
        with refusing("shard checkpoint"):
            doc = orjson.loads(text)
            openers = {kind: (int(seq), MatchKey.from_list(key), int(position), int(first))
                       for kind, (seq, key, position, first) in doc["openers"].items()}
            return cls(int(doc["from"]), int(doc["start"]), int(doc["control"]), _seal_of(doc["prior"]), openers)


class MatchShard(OrderedMatcher):
    """An :class:`OrderedMatcher` that indexes only the hashes ``h % shards == shard``, follows the reduce's seals in
    order once it has read the requests they cover (:meth:`take`, :meth:`follow`; round 1 of each), keeps each
    seal's pair parts and answers the reduce's asks (:meth:`answer`). Earlier queries are named by their position
    in their kind's matching order, which every shard numbers alike, a restarted one too."""

    def __init__(self, settings: MatcherSettings, shards: int, shard: int) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of {shards}")
        super().__init__(settings)
        self.shards, self.shard = shards, shard
        self.followed = -1  # the last seal followed
        self._sealing: list[tuple[KindPairs, int]] = []  # every pair of each kind sealed, and its threshold
        self._kept: dict[int, dict[str, KindPairs]] = {}  # seal -> kind -> every pair, until asked
        self._reach: dict[int, dict[str, tuple[Opener, int]]] = {}  # kept seal -> kind -> the oldest generation it
        # was matched against (its opener and lowest request offset): a restart starts there to count its pairs
        self._waiting_seals: list[tuple[Seal, int]] = []  # seals read, not yet followed, and where they came
        self._seals: dict[int, tuple[Seal, int]] = {}  # seals from the one before the restart point on
        self._opened: dict[str, dict[int, tuple[int, int]]] = {}  # kind -> generation opener position -> (seal, id)
        self._positions: dict[str, tuple[int, np.ndarray]] = {}  # kind -> (first id, position of each stored query)

    @property
    def memory_bytes(self) -> int:
        """The index, the queries waiting, and the pair parts kept for the reduce's asks."""
        kept = sum(getattr(p, name).nbytes for kinds in self._kept.values() for p in kinds.values()
                   for name in ("duplicate", "row", "earlier", "count", "owner"))
        return super().memory_bytes + kept + sum(p.nbytes for _, p in self._positions.values())

    @property
    def shard_checkpoint(self) -> ShardCheckpoint:
        """What a restart needs besides the requests and the seals (:meth:`rebuilt`)."""
        start = self._restart_seal()
        reach = self._restart_reach()
        at = self._seals[start][1] if start in self._seals else -1
        prior = self._seals[start - 1][0] if start - 1 in self._seals else None
        lowest = [o for o in (self.checkpoint.replay_from, *(low for _, low in reach.values())) if o >= 0]
        return ShardCheckpoint(min(lowest, default=-1), start, at, prior,
                               {kind: opener for kind, (opener, _) in reach.items()})

    @classmethod
    def rebuilt(cls, settings: MatcherSettings, shards: int, shard: int, checkpoint: ShardCheckpoint,
                 requests: Iterable[tuple[int, MatchRequestBatch]],
                 controls: Iterable[tuple[int, Seal | PairAsks]]) -> MatchShard:
        """The shard that wrote ``checkpoint``, rebuilt from the requests it had read from ``replay_from`` and the
        reduce's messages it had read from ``control_from`` ((offset, message) pairs). What the seal before ``start``
        covered stays matched; each kind's index starts again at its opener's position and id, and the seals from
        ``start`` on are followed again (their round 1 and answers, sent before, are not returned).

        Exact but for one thing, as :meth:`OrderedMatcher.restored`: a query that repeats exactly a query of the
        generation before the oldest live one was a repeat then and is a new query now (this shard's part of its
        pairs counts where the other shards' do not)."""
        m = cls(settings, shards, shard)
        for offset, request in requests:
            m.add(request, now=0.0, offset=offset)
        controls = list(controls)
        bounds = {c.seq: c for _, c in controls if isinstance(c, Seal)}
        if checkpoint.prior is not None:
            bounds[checkpoint.prior.seq] = checkpoint.prior
            m._seals[checkpoint.prior.seq] = (checkpoint.prior, -1)
        m.followed = checkpoint.start - 1
        for kind in list(m._pending):
            group, offsets = m._waiting(kind)
            matched = checkpoint.prior.covers(group, offsets) if checkpoint.prior else np.zeros(len(group), bool)
            if kind in checkpoint.openers:
                seq, key, position, first = checkpoint.openers[kind]
                if seq not in bounds:
                    raise ValueError(f"seal {seq}, which matched the oldest query of {kind}'s index, was not given")
                if seq - 1 in bounds:
                    matched |= bounds[seq - 1].covers(group, offsets)
                matched |= bounds[seq].covers(group, offsets) & key.after(group)
                m._indexes[kind].starting_at(position, first)
                m._positions[kind] = (first, np.empty(0, np.int64))
            m._pending[kind] = [(group.take(~matched), offsets[~matched])] if not matched.all() else []
        m._pending = {kind: groups for kind, groups in m._pending.items() if groups}
        for at, message in controls:
            if isinstance(message, Seal):
                m.take(message, at)
            elif message.shard == shard and message.seq in m._kept:
                m.answer(message)
        return m

    def take(self, message: Seal | PairAsks, at: int = -1) -> list[ShardPairs | PairAnswers]:
        """A message of the reduce (``at``: where it came in match-control). A seal waits until the requests it
        covers are read, then is followed (round 1 of it and of any waiting after it); asks to this shard are
        answered. A seal read again is ignored."""
        if isinstance(message, PairAsks):
            return [self.answer(message)] if message.shard == self.shard else []
        known = self._waiting_seals[-1][0].seq if self._waiting_seals else self.followed
        if message.seq <= known:
            return []
        if message.seq != known + 1:
            raise ValueError(f"seal {message.seq} came after seal {known}: the seals between were lost")
        self._waiting_seals.append((message, at))
        self._seals[message.seq] = (message, at)
        return list(self.follow())

    def follow(self) -> list[ShardPairs]:
        """Round 1 of each waiting seal that the requests read so far cover, in order."""
        out = []
        while self._waiting_seals and self._waiting_seals[0][0].through <= self.read_through:
            out.append(self.seal(self._waiting_seals.pop(0)[0]))
        return out

    def seal(self, seal: Seal) -> ShardPairs:
        """Match what ``seal`` covers; round 1: the pairs of which this shard counts enough to matter alone."""
        if seal.seq != self.followed + 1:
            raise ValueError(f"seal {seal.seq} is not the next to follow ({self.followed + 1})")
        if self.read_through < seal.through:
            raise ValueError(f"seal {seal.seq} covers match-requests up to {seal.through}; this shard has read up "
                             f"to {self.read_through}")
        self.followed = seal.seq
        self._seals.setdefault(seal.seq, (seal, -1))
        self.sealed_until = max(self.sealed_until, seal.before.ts)
        self._reach[seal.seq] = self._oldest_generations()
        self._match_before(seal.before, seal.through)
        sealed, self._sealing = self._sealing, []
        self._kept[seal.seq] = {pairs.kind: pairs for pairs, _ in sealed}
        self._forget_seals()
        return ShardPairs(seal.seq, self.shard, [pairs.take(pairs.count >= least_part(threshold, self.shards))
                                                 for pairs, threshold in sealed])

    def answer(self, asks: PairAsks) -> PairAnswers:
        """This shard's count of each asked pair (0: it has none); the seal's parts are forgotten."""
        kept = self._kept.pop(asks.seq, None)
        self._reach.pop(asks.seq, None)
        if kept is None:
            raise ValueError(f"shard {self.shard} holds no parts of seal {asks.seq}: it answered it, or never "
                             "sealed it")
        counts = []
        for kind, row, earlier in asks.kinds:
            mine = kept.get(kind)
            if mine is None or not len(mine.count):
                counts.append((kind, np.zeros(len(row), np.int32)))
                continue
            at, known = sorted_positions(_keys(mine.row, mine.earlier), _keys(row, earlier))
            counts.append((kind, np.where(known, mine.count[at], 0).astype(np.int32)))
        self._forget_seals()
        return PairAnswers(asks.seq, self.shard, counts)

    def _oldest_generations(self) -> dict[str, tuple[Opener, int]]:
        """Per kind, the opener of the oldest live generation and the lowest request offset matched into it."""
        out = {}
        for kind, keys in self._openers.items():
            if keys:
                position = min(keys)
                seq, first = self._opened[kind][position]
                out[kind] = (seq, MatchKey(*keys[position], kind), position, first), self._lowest[kind][position]
        return out

    def _restart_reach(self) -> dict[str, tuple[Opener, int]]:
        """Per kind, where a restart starts its index: the oldest generation live now or when a seal not yet answered
        was matched (its parts count pairs with that generation's queries)."""
        reach = self._oldest_generations()
        for kinds in self._reach.values():
            for kind, (opener, low) in kinds.items():
                if kind not in reach or opener[2] < reach[kind][0][2]:
                    reach[kind] = (opener, low)
        return reach

    def _restart_seal(self) -> int:
        """The first seal a restart follows again: the oldest that matched the first query of a generation it starts
        from, is not yet answered, or waits."""
        openers = [opener[0] for opener, _ in self._restart_reach().values()]
        return min([*openers, *self._kept, *(s.seq for s, _ in self._waiting_seals), self.followed + 1])

    def _forget_seals(self) -> None:
        start = self._restart_seal()
        for seq in [seq for seq in self._seals if seq < start - 1]:
            del self._seals[seq]

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        index = self._index_for(group)
        before = index.position
        mine = np.where(group.hashes % np.uint64(self.shards) == self.shard, group.hashes, np.uint64(0))
        matches, pairs = index.update_with_pairs(mine, group.exact, now=group.ts,
                                                 clients=self._clients.codes(group.client_id))
        first, positions = self._positions.get(group.kind, (0, np.empty(0, np.int64)))
        positions = np.concatenate([positions, before + np.flatnonzero(~matches.duplicate)])
        earlier = positions[pairs.earlier - first]  # ids as positions: every shard, restarted or not, numbers alike
        gone = index.oldest_id - first
        self._positions[group.kind] = (index.oldest_id, positions[gone:])
        self._note_generations(group, offsets, index.generation_openings, before)
        self._sealing.append((KindPairs(group.kind, matches.duplicate, pairs.row, earlier, pairs.count,
                                        pairs.owner), group.threshold))  # in key order: asks are binary searches
        return MatchResult.empty()

    def _note_generations(self, group: MatchGroup, offsets: np.ndarray, openings: list[int], before: int) -> None:
        super()._note_generations(group, offsets, openings, before)
        opened = self._opened.setdefault(group.kind, {})
        for position, first in zip(openings, self._indexes[group.kind].generation_ids, strict=True):
            opened.setdefault(position, (self.followed, first))
        for gone in [p for p in opened if p < openings[0]]:
            del opened[gone]


@dataclass(frozen=True)
class ReduceCheckpoint:
    """What a restarted reduce needs besides ``match-requests`` (from ``replay_from``) and ``match-pairs`` (from
    ``pairs_from``): the last seal reduced, the seals decided and not yet reduced (the oldest first), how far the
    watermark closed buckets, and the watermark published with results. Small: the reduce leaves at most a few seals
    open, and this travels as the metadata of the offsets it commits.

    >>> c = ReduceCheckpoint(120.0, 185.0, 60.0, 4, 17, Seal(2, 9, MatchKey(120.0)), [Seal(3, 12, MatchKey(180.0))])
    >>> ReduceCheckpoint.from_json(c.to_json()) == c, ReduceCheckpoint.from_json("")
    (True, None)
    """

    sealed_until: float
    watermark: float
    published: float
    replay_from: int
    pairs_from: int
    reduced: Seal | None
    open: list[Seal]

    def to_json(self) -> str:
        return orjson.dumps({"v": 1, "sealed": _finite(self.sealed_until), "watermark": _finite(self.watermark),
                             "published": _finite(self.published), "from": self.replay_from,
                             "pairs": self.pairs_from, "reduced": _seal_doc(self.reduced),
                             "open": [_seal_doc(s) for s in self.open]}).decode()

    @classmethod
    def from_json(cls, text: str) -> ReduceCheckpoint | None:
        """None for no checkpoint (the empty metadata of a first start)."""
        if not text:
            return None
        with refusing("reduce checkpoint"):
            doc = orjson.loads(text)
            return cls(_infinite(doc["sealed"]), _infinite(doc["watermark"]), _infinite(doc["published"]),
                       int(doc["from"]), int(doc["pairs"]), _seal_of(doc["reduced"]),
                       [s for d in doc["open"] if (s := _seal_of(d)) is not None])


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
    answers into one matcher's result (:meth:`take_answers`). Seals are reduced in the order decided.

    ``seal_limit`` bounds the queries of a seal (and so what each shard keeps between the rounds), but for queries
    that came later than the grace period, which the next seal takes whatever their number; ``max_open`` bounds the
    seals decided and not yet reduced (``decide`` waits for results past it)."""

    def __init__(self, settings: MatcherSettings, shards: int, seal_limit: int | None = None,
                 max_open: int | None = None) -> None:
        super().__init__(settings)
        self.shards = shards
        self.seal_limit = seal_limit
        self.max_open = max_open
        self._sealing: list[tuple[MatchGroup, int]] = []  # each kind's queries sealed, and their lowest offset
        self._sealed: dict[int, list[MatchGroup]] = {}  # seal -> its groups, until every shard's round 1 is in
        self._round_one: dict[int, dict[int, ShardPairs]] = {}
        self._round_two: dict[int, tuple[list[_Candidates], set[int]]] = {}  # seal -> kinds, shards yet to answer
        self._open: dict[int, tuple[Seal, int, float]] = {}  # seal -> it, its lowest request offset and event time
        self._pairs_at: dict[int, int] = {}  # open seal -> the first match-pairs offset taken for it
        self._last: Seal | None = None  # the last seal decided: what every seal so far covered
        self._reduced: Seal | None = None  # the last seal reduced
        self._published = float("-inf")
        self.sent = 0  # pairs the shards sent in round 1, so far
        self.asked = 0  # pairs round 2 asked them for, so far

    @property
    def seals(self) -> int:
        """Seals decided so far."""
        return 0 if self._last is None else self._last.seq + 1

    @property
    def open_seals(self) -> int:
        """Seals decided and not yet reduced."""
        return len(self._open)

    @property
    def reduce_checkpoint(self) -> ReduceCheckpoint:
        """What a restart needs besides the requests and the shards' messages (:meth:`rebuilt`)."""
        lowest = [o for o in (self.checkpoint.replay_from, *(low for _, low, _ in self._open.values())) if o >= 0]
        return ReduceCheckpoint(self.sealed_until, self._watermark, self._published, min(lowest, default=-1),
                                min(self._pairs_at.values(), default=-1), self._reduced,
                                [seal for seal, _, _ in self._open.values()])

    @classmethod
    def rebuilt(cls, settings: MatcherSettings, shards: int, checkpoint: ReduceCheckpoint,
                 requests: Iterable[tuple[int, MatchRequestBatch, float]],
                 replies: Iterable[tuple[int, ShardPairs | PairAnswers]], seal_limit: int | None = None,
                 max_open: int | None = None) -> MatchReduce:
        """The reduce that wrote ``checkpoint``, rebuilt from the requests it had read ((offset, request, wall time
        written); those before ``replay_from`` only say which sources were alive) and the shards' messages it had
        read from ``pairs_from`` ((offset, message)): what the last seal reduced covered stays matched, the open seals
        cover what they covered, and their rounds are taken again (the asks and results they gave before are not
        returned). Exact: a seal's bounds say what it covered."""
        m = cls(settings, shards, seal_limit, max_open)
        for offset, request, written in requests:
            m.add(request if offset >= checkpoint.replay_from else replace(request, groups=[]), written, offset)
        m._watermark, m.sealed_until, m._published = checkpoint.watermark, checkpoint.sealed_until, checkpoint.published
        if checkpoint.reduced is not None:
            m._match_before(checkpoint.reduced.before, checkpoint.reduced.through)
            m._sealing = []
        m._last = m._reduced = checkpoint.reduced
        for seal in checkpoint.open:
            if not m._open_seal(seal):
                raise ValueError(f"seal {seal.seq} covers none of the requests given: they do not reach back to the "
                                 "checkpoint's")
        for at, reply in replies:
            if isinstance(reply, ShardPairs):
                m.take_pairs(reply, at)
            else:
                m.take_answers(reply, at)
        return m

    def add(self, request: MatchRequestBatch, now: float, offset: int = -1) -> None:
        super().add(replace(request, groups=[replace(g, hashes=g.hashes[:, :0]) for g in request.groups]), now, offset)

    def decide(self, now: float) -> Seal | None:
        """The next seal, where the watermark closed a bucket that holds waiting queries (None: nothing to match, or
        ``max_open`` seals wait for their results). With ``seal_limit``, call again until None."""
        until = self.closed_until(now)
        if self.max_open is not None and len(self._open) >= self.max_open:
            return None
        return self._seal(until)

    def finish(self) -> Seal | None:
        """End of input: the next seal of what is still waiting (call again until None)."""
        return self._seal(math.inf)

    def published_watermark(self, now: float) -> float:
        """The watermark to publish with results: that of the sources, held back to the start of the first bucket
        with a query not yet reduced (so the alerter closes no bucket before its matches are in); it never goes
        back."""
        s = self.settings
        low = min([self.sealed_until, *(ts for _, _, ts in self._open.values())]
                  + [float(g.ts.min()) for groups in self._pending.values() for g, _ in groups
                     if len(g) and g.ts.min() < self.sealed_until])
        done = math.floor(low / s.bucket_s) * s.bucket_s + s.grace_s if math.isfinite(low) else low
        self._published = max(self._published, min(self.watermark(now), done))
        return self._published

    def take_pairs(self, pairs: ShardPairs, at: int = -1) -> list[PairAsks]:
        """A shard's round 1 (``at``: where it came in match-pairs). Once every shard's is in: round 2, one ask to
        each shard (empty ones too: a shard forgets a seal's parts when it answers). One taken before is ignored."""
        if pairs.seq not in self._sealed:
            return []
        self._pairs_at.setdefault(pairs.seq, at)
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

    def take_answers(self, answers: PairAnswers, at: int = -1) -> MatchResult | None:
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
        self._reduced = self._open.pop(answers.seq)[0]
        self._pairs_at.pop(answers.seq, None)
        results = [self._result(c) for c in kinds]
        return MatchResult.concat(results) if results else MatchResult.empty()

    def _seal(self, until: float) -> Seal | None:
        before = self._bound(until)
        if self._last is not None:
            before = max(before, self._last.before)
        seal = Seal(self.seals, self.read_through, before)
        return seal if self._open_seal(seal) else None

    def _bound(self, until: float) -> MatchKey:
        """Before which key the next seal ends: ``until``, or past the first ``seal_limit`` queries due (and any of
        the same key as the last of them)."""
        waiting = [g for groups in self._pending.values() for g, _ in groups]
        times = np.concatenate([g.ts[g.ts < until] for g in waiting]) if waiting else np.empty(0)
        if self.seal_limit is None or len(times) <= self.seal_limit:
            return MatchKey(until)
        last = float(np.partition(times, self.seal_limit - 1)[self.seal_limit - 1])
        ties = sorted(MatchKey.of(g, row) for g in waiting for row in np.flatnonzero(g.ts == last).tolist())
        taken = ties[self.seal_limit - 1 - int((times < last).sum())]
        return next((key for key in ties if key > taken), MatchKey(float(np.nextafter(last, math.inf))))

    def _open_seal(self, seal: Seal) -> bool:
        """Take what ``seal`` covers from the waiting queries; whether it covered any."""
        self._match_before(seal.before, seal.through)
        if not self._sealing:
            return False
        groups, lows = [g for g, _ in self._sealing], [low for _, low in self._sealing]
        self._sealing = []
        self._sealed[seal.seq], self._last = groups, seal
        self._open[seal.seq] = (seal, min(lows), min(float(g.ts.min()) for g in groups))
        return True

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        self._sealing.append((group, int(offsets.min())))
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


def _seal_doc(seal: Seal | None) -> dict[str, Any] | None:
    return None if seal is None else seal.header()


def _seal_of(doc: dict[str, Any] | None) -> Seal | None:
    return None if doc is None else Seal.from_header(doc)
