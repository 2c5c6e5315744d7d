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

from dataclasses import dataclass, fields

import numpy as np

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
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows, value_index
from monitor.detect.fingerprint import ClientCodes, QueryIndex, QueryMatches


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
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


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


class OrderedMatcher:
    def __init__(self, settings: MatcherSettings) -> None:
        self.settings = settings
        self._indexes: dict[str, QueryIndex] = {}
        self._clients = ClientCodes()
        self._pending: dict[str, list[MatchGroup]] = {}
        self._sources: dict[str, tuple[float, float]] = {}  # worker or partition -> (watermark, wall time heard)
        self._watermark = float("-inf")
        self.sealed_until = float("-inf")  # every bucket that starts before this has been matched

    @property
    def pending_queries(self) -> int:
        return sum(len(g) for groups in self._pending.values() for g in groups)

    @property
    def stored_queries(self) -> int:
        return sum(index.stored_queries for index in self._indexes.values())

    @property
    def memory_bytes(self) -> int:
        """The indexes' postings, owners and content hashes, and the queries waiting for their bucket."""
        waiting = sum(g.hashes.nbytes + 64 * len(g) for groups in self._pending.values() for g in groups)
        return sum(index.memory_bytes for index in self._indexes.values()) + waiting

    def add(self, request: MatchRequestBatch, now: float) -> None:
        """A batch's queries wait for their bucket; its watermarks move on every source it speaks for
        (``monitor.contracts.event_time``: the worker, the input partitions it reports, those no one has)."""
        for group in request.groups:
            if len(group):
                self._pending.setdefault(group.kind, []).append(group)
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
        s = self.settings
        closed = np.floor((self.watermark(now) - s.grace_s) / s.bucket_s) * s.bucket_s
        if np.isfinite(closed):
            self.sealed_until = max(self.sealed_until, float(closed))
        return self._match_before(self.sealed_until)

    def flush(self) -> MatchResult:
        """End of input: match everything still waiting."""
        return self._match_before(float("inf"))

    def _match_before(self, until: float) -> MatchResult:
        results = []
        for kind in sorted(self._pending):
            group = MatchGroup.concat(self._pending[kind])
            due = group.ts < until
            waiting = group.take(~due)
            self._pending[kind] = [waiting] if len(waiting) else []
            if due.any():
                results.append(self._match(_in_event_time(group.take(due))))
        self._pending = {kind: groups for kind, groups in self._pending.items() if groups}
        return MatchResult.concat(results) if results else MatchResult.empty()

    def _index_for(self, group: MatchGroup) -> QueryIndex:
        index = self._indexes.get(group.kind)
        if index is None:
            s = self.settings
            index = self._indexes[group.kind] = QueryIndex(group.threshold, s.postings_cap, s.generation_queries,
                                                           s.generation_s)
        return index

    def _match(self, group: MatchGroup) -> MatchResult:
        matches = self._index_for(group).update(group.hashes, group.exact, now=group.ts,
                                                clients=self._clients.codes(group.client_id))
        matched = np.full(len(group), "", dtype=object)
        cross = matches.cross_flagged
        matched[cross] = self._clients.names(matches.matched_client[cross])
        verdicts = QueryVerdicts(group.event_id, matches.flagged, matches.own_flagged, cross, matched,
                                 matches.duplicate)
        bucket = (group.ts // self.settings.bucket_s).astype(np.int64) * self.settings.bucket_s
        production = group.traffic == PRODUCTION
        edges = MatchEdges.from_events(bucket, group.model, group.client_id, np.where(production & cross, matched, ""))
        return MatchResult(match_deltas(group, matches, bucket), _evidence(group, verdicts), edges, verdicts)


def _in_event_time(group: MatchGroup) -> MatchGroup:
    """The queries in (event time, event id, content hash) order: the same queries build the same index and get
    the same verdicts whatever order they arrived in, and however many closed buckets are matched at once (the
    index's results do not depend on how it is fed: ``QueryIndex.update``)."""
    _, ids = np.unique(group.event_id.astype(str), return_inverse=True)
    return group.take(np.lexsort((group.exact, ids, group.ts)))


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
