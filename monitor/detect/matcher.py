"""Query matching in event-time order behind the watermark, so that what a query matches does not depend on
the order in which partitions, workers or files were read.

The matcher holds the query indexes (:class:`~monitor.detect.fingerprint.QueryIndex`, one per input kind). It
takes the fingerprinted queries of every batch (``match-requests``) and keeps them until the watermark (the
slowest source's) has passed their bucket by the grace period, the moment the alerter closes that bucket too.
Then it matches the closed buckets' queries sorted by (event time, event id, content hash), and returns the
counter changes its verdicts make (near-duplicates, exact repeats, and the clean, missed and false-positive
counts they take events out of), the match edges between clients and the near-duplicates as evidence.
Counters are sums, so these changes add to the engine's rows wherever they meet. A query whose bucket was
already matched when it arrived (later than the grace period) is matched at the next advance.

Pure: time is a parameter (``now``, wall seconds, only decides which sources count as idle).

>>> import numpy as np
>>> from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
>>> from monitor.detect.fingerprint import Fingerprinter, content_hashes
>>> fp = Fingerprinter.for_dimension(64, secret=b"doc")
>>> rng = np.random.default_rng(1); base = rng.random(64, dtype=np.float32)
>>> x = np.clip(base + rng.normal(0, 0.002, (4, 64)), 0, 1).astype(np.float32)
>>> def request(rows, watermark):
...     n = len(rows); o = lambda v: np.array([v] * n, object)
...     g = MatchGroup("64", fp.threshold, o("m"), np.array([f"e{i}" for i in rows], object),
...                    np.array([f"key{i}" for i in rows], object), np.array(rows, float) + 60, np.zeros(n, np.int8),
...                    np.zeros(n, bool), np.ones(n), fp.hashes(x[rows]), content_hashes(x[rows]))
...     return MatchRequestBatch("ingest-0", watermark, [g])
>>> m = OrderedMatcher(MatcherSettings(bucket_s=60, grace_s=0))
>>> m.add(request([3, 1], watermark=64.0), now=0.0); len(m.advance(now=0.0).verdicts), m.pending_queries
(0, 2)
>>> m.add(request([0, 2], watermark=130.0), now=0.0)
>>> v = m.advance(now=0.0).verdicts   # bucket 60 sealed: matched in event time, not in arrival order
>>> v.event_id.tolist(), v.near.tolist(), v.matched_client.tolist()
(['e0', 'e1', 'e2', 'e3'], [False, True, True, True], ['', 'key0', 'key0', 'key0'])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import orjson

from monitor.contracts.columns import concat_columns
from monitor.contracts.edges import MatchEdges
from monitor.contracts.event_time import reported_sources
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.match_requests import (
    ADVERSARIAL_CANARY,
    BENIGN_CANARY,
    PRODUCTION,
    MatchGroup,
    MatchRequestBatch,
)
from monitor.contracts.match_shards import MatchKey
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows, value_index
from monitor.detect.fingerprint import ClientCodes, QueryIndex, QueryMatches
from monitor.errors import WireError

#: A query's place in matching order: (event time, event id, content hash).
QueryKey = tuple[float, str, int]


@dataclass(frozen=True)
class MatcherSettings:
    bucket_s: int = 60
    grace_s: float = 60.0
    postings_cap: int = 64
    generation_queries: int = 50_000
    generation_s: float = 24 * 3600.0
    idle_source_s: float = 120.0  # a source not heard from for this long (wall time) stops holding the watermark


@dataclass(frozen=True)
class QueryVerdicts:
    """What matching said about each query, by event id (the per-event signals of the query detectors)."""

    event_id: np.ndarray  # object
    near: np.ndarray  # bool: a near-duplicate of an earlier query
    own: np.ndarray  # bool: ... of the same client's
    cross: np.ndarray  # bool: ... of another client's
    matched_client: np.ndarray  # object: that other client ("")
    duplicate: np.ndarray  # bool: an exact repeat

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def empty(cls) -> QueryVerdicts:
        return cls(np.empty(0, object), *(np.empty(0, bool),) * 3, np.empty(0, object), np.empty(0, bool))

    @classmethod
    def concat(cls, parts: list[QueryVerdicts]) -> QueryVerdicts:
        return concat_columns(cls, parts)


@dataclass(frozen=True)
class MatchResult:
    rows: SliRows  # counter changes
    flagged: FlaggedEvents  # near-duplicate production queries the engine had not flagged
    edges: MatchEdges  # which clients' queries matched whose
    verdicts: QueryVerdicts

    @classmethod
    def empty(cls) -> MatchResult:
        return cls(SliRows.empty(), FlaggedEvents.empty(), MatchEdges.empty(), QueryVerdicts.empty())

    @classmethod
    def concat(cls, parts: list[MatchResult]) -> MatchResult:
        return cls(SliRows.concat([p.rows for p in parts]).combined(), FlaggedEvents.concat([p.flagged for p in parts]),
                   MatchEdges.concat([p.edges for p in parts]).combined(),
                   QueryVerdicts.concat([p.verdicts for p in parts]))


@dataclass(frozen=True)
class MatcherCheckpoint:
    """What a restarted matcher needs besides ``match-requests`` itself to be what it was: small enough to travel
    as the metadata of the offset it commits with each batch, so the two never disagree.

    The matcher's state is a function of the requests it read and of when it sealed buckets. From the requests
    at ``replay_from`` on (the oldest one with a query still indexed or waiting), the buckets before
    ``sealed_until`` matched, and each index started at the query that opened its oldest live generation
    (``openers``), a new matcher builds the same indexes and holds the same queries.

    >>> c = MatcherCheckpoint(120.0, 185.0, 42, {"64": (61.5, "e7", 99)})
    >>> MatcherCheckpoint.from_json(c.to_json()) == c, MatcherCheckpoint.from_json("")
    (True, None)
    """

    sealed_until: float
    watermark: float
    replay_from: int  # the first offset of match-requests to read again (-1: none holds anything)
    openers: dict[str, QueryKey]  # per index kind: the query that opened its oldest live generation

    def to_json(self) -> str:
        return orjson.dumps({"v": 1, "sealed": _finite(self.sealed_until), "watermark": _finite(self.watermark),
                             "from": self.replay_from, "openers": self.openers}).decode()

    @classmethod
    def from_json(cls, text: str) -> MatcherCheckpoint | None:
        """None for no checkpoint (the empty metadata of a first start)."""
        if not text:
            return None
        try:
            doc = orjson.loads(text)
            return cls(_infinite(doc["sealed"]), _infinite(doc["watermark"]), int(doc["from"]),
                       {kind: (float(t), str(e), int(h)) for kind, (t, e, h) in doc["openers"].items()})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise WireError(f"not a matcher checkpoint: {text[:80]!r} ({exc})") from None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _infinite(value: float | None) -> float:
    return float("-inf") if value is None else float(value)


class OrderedMatcher:
    def __init__(self, settings: MatcherSettings) -> None:
        self.settings = settings
        self._indexes: dict[str, QueryIndex] = {}
        self._clients = ClientCodes()
        self._pending: dict[str, list[tuple[MatchGroup, np.ndarray]]] = {}  # queries and the offsets they came at
        self._openers: dict[str, dict[int, QueryKey]] = {}  # per kind: each live generation's first query, by position
        self._lowest: dict[str, dict[int, int]] = {}  # per kind: each live generation's lowest request offset
        self._sources: dict[str, tuple[float, float]] = {}  # worker or partition -> (watermark, wall time heard)
        self._watermark = float("-inf")
        self.sealed_until = float("-inf")  # every bucket that starts before this has been matched
        self.read_through = -1  # the latest match-requests offset given to add

    @property
    def pending_queries(self) -> int:
        return sum(len(g) for groups in self._pending.values() for g, _ in groups)

    @property
    def stored_queries(self) -> int:
        return sum(index.stored_queries for index in self._indexes.values())

    @property
    def memory_bytes(self) -> int:
        """The indexes' postings, owners and content hashes, and the queries waiting for their bucket."""
        waiting = sum(g.hashes.nbytes + 72 * len(g) for groups in self._pending.values() for g, _ in groups)
        return sum(index.memory_bytes for index in self._indexes.values()) + waiting

    @property
    def lookback_s(self) -> float:
        """The shortest look-back of its indexes (one per input kind; :attr:`QueryIndex.lookback_s`): a query
        spaced further than this from the earlier ones it resembles is matched with none of them."""
        return min((index.lookback_s for index in self._indexes.values()), default=math.inf)

    @property
    def checkpoint(self) -> MatcherCheckpoint:
        """What a restart needs besides the requests from ``replay_from`` on (offsets given to :meth:`add`)."""
        lowest = [o for per_kind in self._lowest.values() for o in per_kind.values()]
        lowest += [int(offsets.min()) for groups in self._pending.values() for _, offsets in groups]
        openers = {kind: keys[min(keys)] for kind, keys in self._openers.items() if keys}
        return MatcherCheckpoint(self.sealed_until, self._watermark, min(lowest, default=-1), openers)

    @classmethod
    def restored(cls, settings: MatcherSettings, checkpoint: MatcherCheckpoint,
                 requests: Iterable[tuple[int, MatchRequestBatch, float]]) -> OrderedMatcher:
        """The matcher that wrote ``checkpoint``, rebuilt from the requests it had read: (offset, request, wall
        time it was written) up to the checkpoint's offset. Those before ``replay_from`` only say which sources
        were alive; the rest are matched again up to ``sealed_until`` (their verdicts were published then) from
        each index's oldest opener on, and the others wait for their bucket as they did. A query that arrived
        later than the grace period was matched after queries of later buckets; here it takes its place in
        event time (the only difference)."""
        matcher = cls(settings)
        forgotten: set[str] = set()  # kinds with queries before the replay: of generations the original forgot
        for offset, request, written in requests:
            if offset < checkpoint.replay_from:
                forgotten.update(group.kind for group in request.groups if len(group))
                request = replace(request, groups=[])
            matcher.add(request, written, offset)
        matcher._watermark, matcher.sealed_until = checkpoint.watermark, checkpoint.sealed_until
        for kind, opener in checkpoint.openers.items():
            if kind not in matcher._pending:  # its requests are gone (retention): the index starts empty
                continue
            group, offsets = matcher._waiting(kind)
            kept = ~MatchKey(*opener, kind).after(group)
            matcher._pending[kind] = [(group.take(kept), offsets[kept])]
            if kind in forgotten or not kept.all():
                matcher._indexes[kind].continuing()
        matcher._match_before(MatchKey(matcher.sealed_until))
        return matcher

    def add(self, request: MatchRequestBatch, now: float, offset: int = -1) -> None:
        """A batch's queries wait for their bucket; its watermarks move on every source it speaks for
        (``monitor.contracts.event_time``: the worker, the input partitions it reports, those no one has).
        ``offset``: where the request is in ``match-requests`` (for :attr:`checkpoint`)."""
        self.read_through = max(self.read_through, offset)
        for group in request.groups:
            if len(group):
                self._pending.setdefault(group.kind, []).append((group, np.full(len(group), offset, np.int64)))
                self._index_for(group)
        sources = reported_sources(request.instance, request.watermark, request.partitions, request.inputs,
                                   self._sources)
        for name, mark in sources:
            previous = self._sources.get(name, (float("-inf"), now))[0]
            self._sources[name] = (max(previous, mark), now)

    def watermark(self, now: float) -> float:
        """The slowest source's, among those heard from within ``idle_source_s``; it never goes back."""
        active = [mark for mark, seen in self._sources.values() if now - seen <= self.settings.idle_source_s]
        if active:
            self._watermark = max(self._watermark, min(active))
        return self._watermark

    def advance(self, now: float) -> MatchResult:
        """Match every bucket the watermark closed (ended ``grace_s`` before it), oldest first."""
        return self._match_before(MatchKey(self.closed_until(now)))

    def closed_until(self, now: float) -> float:
        """Where the buckets the watermark closed end (it never goes back): what :meth:`advance` matches before."""
        s = self.settings
        closed = np.floor((self.watermark(now) - s.grace_s) / s.bucket_s) * s.bucket_s
        if np.isfinite(closed):
            self.sealed_until = max(self.sealed_until, float(closed))
        return self.sealed_until

    def flush(self) -> MatchResult:
        """End of input: match everything still waiting."""
        return self._match_before(MatchKey(math.inf))

    def _match_before(self, before: MatchKey, through: int | None = None) -> MatchResult:
        """Match the waiting queries that come before ``before`` in matching order (and that came at or before the
        offset ``through``, where given), kind by kind in name order, each kind's in event-time order."""
        results = []
        for kind in sorted(self._pending):
            group, offsets = self._waiting(kind)
            due = before.after(group) & (offsets <= through if through is not None else True)
            self._pending[kind] = [(group.take(~due), offsets[~due])] if not due.all() else []
            if due.any():
                closed = group.take(due)
                order = _event_time_order(closed)
                results.append(self._match(closed.take(order), offsets[due][order]))
        self._pending = {kind: groups for kind, groups in self._pending.items() if groups}
        return MatchResult.concat(results) if results else MatchResult.empty()

    def _waiting(self, kind: str) -> tuple[MatchGroup, np.ndarray]:
        groups = self._pending[kind]
        return MatchGroup.concat([g for g, _ in groups]), np.concatenate([o for _, o in groups])

    def _index_for(self, group: MatchGroup) -> QueryIndex:
        index = self._indexes.get(group.kind)
        if index is None:
            s = self.settings
            index = self._indexes[group.kind] = QueryIndex(group.threshold, s.postings_cap, s.generation_queries,
                                                           s.generation_s)
        return index

    def _match(self, group: MatchGroup, offsets: np.ndarray) -> MatchResult:
        index = self._index_for(group)
        before = index.position
        matches = index.update(group.hashes, group.exact, now=group.ts, clients=self._clients.codes(group.client_id))
        self._note_generations(group, offsets, index.generation_openings, before)
        return match_result(group, matches, self._clients, self.settings.bucket_s)

    def _note_generations(self, group: MatchGroup, offsets: np.ndarray, openings: list[int], before: int) -> None:
        """For :attr:`checkpoint`: the query that opened each live generation, and the lowest request offset of
        the queries matched into it (exact repeats included: one may open a generation)."""
        openers = self._openers.setdefault(group.kind, {})
        lowest = self._lowest.setdefault(group.kind, {})
        positions = before + np.arange(len(group))
        for opened, end in zip(openings, [*openings[1:], math.inf], strict=True):
            if before <= opened < before + len(group):
                row = opened - before
                openers[opened] = (float(group.ts[row]), str(group.event_id[row]), int(group.exact[row]))
            into = (positions >= opened) & (positions < end)
            if into.any():
                low = int(offsets[into].min())
                lowest[opened] = min(lowest.get(opened, low), low)
        for gone in [p for p in openers if p < openings[0]]:
            del openers[gone]
            lowest.pop(gone, None)


def match_result(group: MatchGroup, matches: QueryMatches, clients: ClientCodes, bucket_s: int) -> MatchResult:
    """What a group's verdicts change and show: counter changes, evidence, match edges (``clients`` names the
    codes of the clients matched)."""
    matched = np.full(len(group), "", dtype=object)
    cross = matches.cross_flagged
    matched[cross] = clients.names(matches.matched_client[cross])
    verdicts = QueryVerdicts(group.event_id, matches.flagged, matches.own_flagged, cross, matched, matches.duplicate)
    bucket = (group.ts // bucket_s).astype(np.int64) * bucket_s
    production = group.traffic == PRODUCTION
    edges = MatchEdges.from_events(bucket, group.model, group.client_id, np.where(production & cross, matched, ""))
    return MatchResult(match_deltas(group, matches, bucket), _evidence(group, verdicts), edges, verdicts)


def _event_time_order(group: MatchGroup) -> np.ndarray:
    """The queries' (event time, event id, content hash) order: the same queries build the same index and get
    the same verdicts whatever order they arrived in, and however many closed buckets are matched at once (the
    index's results do not depend on how it is fed: ``QueryIndex.update``)."""
    _, ids = np.unique(group.event_id.astype(str), return_inverse=True)
    return np.lexsort((group.exact, ids, group.ts))


def match_deltas(group: MatchGroup, matches: QueryMatches, bucket: np.ndarray) -> SliRows:
    """The counter changes of a group's verdicts. The engine counted every fingerprinted production query in
    ``queries`` and every event no profile score flagged as clean (or, for an adversarial canary, missed); a
    near-duplicate is detected too, and an exact repeat is not a query. Limitation: the first-offending time of
    detector misses cannot be taken back, so it may be earlier than the misses that remain."""
    production = group.traffic == PRODUCTION
    near, duplicate = matches.flagged, matches.duplicate
    newly = near & ~group.anomalous
    adversarial, benign = group.traffic == ADVERSARIAL_CANARY, (group.traffic == BENIGN_CANARY) & newly
    values = np.zeros((len(group), len(VALUE_COLUMNS)))
    for name, sign, which in (("queries", -1, duplicate & production), ("duplicates", 1, duplicate),
                              ("query_flagged", 1, near & production),
                              ("own_near_dup", 1, matches.own_flagged & production),
                              ("cross_near_dup", 1, matches.cross_flagged & production),
                              ("private_near_dup", 1, matches.own_flagged & ~matches.cross_flagged & production),
                              ("clean_events", -1, newly & production), ("adv_missed", -1, newly & adversarial),
                              ("benign_flagged", 1, benign)):
        values[:, value_index(name)] = np.where(which, sign, 0.0)
    values[:, value_index("clean_conf_sum")] = np.where(newly & production, -group.confidence, 0.0)
    first = np.full((len(group), len(BAD_COUNTERS)), np.inf)
    first[:, BAD_COUNTERS.index("query_flagged")] = np.where(near & production, group.ts, np.inf)
    first[:, BAD_COUNTERS.index("benign_flagged")] = np.where(benign, group.ts, np.inf)
    changed = np.any(values != 0, axis=1)
    return SliRows(bucket[changed], group.model[changed], group.client_id[changed], values[changed],
                   first[changed]).combined()


def _evidence(group: MatchGroup, verdicts: QueryVerdicts) -> FlaggedEvents:
    """Near-duplicate production queries no profile score flagged (those the engine reported as anomalous
    already, with their scores)."""
    rows = np.flatnonzero(verdicts.near & ~group.anomalous & (group.traffic == PRODUCTION))
    names = [f"{int(h):016x}" for h in group.exact[rows].tolist()]
    return FlaggedEvents.of(group.event_id[rows], group.model[rows], group.client_id[rows], group.ts[rows],
                            ["near-duplicate"] * len(rows), names, own_near_duplicate=verdicts.own[rows],
                            cross_near_duplicate=verdicts.cross[rows], matched_client=verdicts.matched_client[rows])
