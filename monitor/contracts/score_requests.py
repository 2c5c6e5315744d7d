"""Embedding scoring out of process: the ``score-requests`` message and the scorer's SLI deltas.

With remote scoring on, an ingest worker scores raw inputs itself but ships each batch's
embeddings (float32, binary) to the scorer, with what it already decided about each event. The
scorer flags embeddings against the reference profile and publishes, on ``sli-buckets`` like any
ingest worker, the *change* those flags make to the counters: +1 anomalous and -1 clean for a
production event ingest had not flagged, -1 detector miss for a caught adversarial canary, +1
false positive for a flagged benign canary. Counters are sums, so the alerter adds them as usual.

Every ingest batch sends a request, even without embeddings: its watermark tells the scorer (and
through it the alerter) how far event time has got.

With remote matching on as well, the request carries the batch's match request (``matches``): the
scorer marks the events it flagged as anomalous there and passes it on to ``match-requests``, so
the matcher leaves their clean, missed and false-positive counts to the scorer (as ingest's own
matcher does with its own scores) and no event is taken off the clean count twice. Each message
then holds both parts of the same events (``chunks``).

>>> import numpy as np
>>> req = ScoreRequestBatch("ingest-0", 120.0, [ScoreGroup(
...     model="m", event_id=np.array(["e1", "e2"], dtype=object), client_id=np.array(["c", "c"], dtype=object),
...     ts=np.array([61.0, 62.0]), confidence=np.array([0.9, 0.8]), kind=np.array([PRODUCTION, BENIGN_CANARY], np.int8),
...     anomalous=np.array([False, False]), detected=np.array([False, False]), embedding=np.ones((2, 3), np.float32),
...     logits=None)])
>>> back = ScoreRequestBatch.decode(req.encode())
>>> back.instance, back.watermark, back.groups[0].embedding.shape, back.groups[0].kind.tolist()
('ingest-0', 120.0, (2, 3), [0, 2])
>>> rows, _ = score_deltas(back.groups[0], flagged=np.array([True, True]), bucket_s=60)
>>> [rows.column(n).tolist() for n in ("anomalous", "clean_events", "benign_flagged", "clean_conf_sum")]
[[1.0], [-1.0], [1.0], [-0.9]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.framing import FrameReader, framed, refusing
from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows, value_index
from monitor.contracts.traffic import ADVERSARIAL_CANARY, BENIGN_CANARY, PRODUCTION

__all__ = ["ADVERSARIAL_CANARY", "BENIGN_CANARY", "PRODUCTION", "ScoreGroup", "ScoreRequestBatch", "score_deltas"]
VERSION = 1


@dataclass(frozen=True)
class ScoreGroup:
    """The events of one model whose embeddings share a dimension."""

    model: str
    event_id: np.ndarray
    client_id: np.ndarray
    ts: np.ndarray
    confidence: np.ndarray
    kind: np.ndarray  # PRODUCTION | ADVERSARIAL_CANARY | BENIGN_CANARY
    anomalous: np.ndarray  # ingest's raw-input scores flagged it already
    detected: np.ndarray  # ingest flagged it by any detector (raw-input scores or fingerprints)
    embedding: np.ndarray  # (n, dim) float32
    logits: np.ndarray | None  # (n, classes) float32, NaN rows where none was logged

    def __len__(self) -> int:
        return len(self.event_id)

    @property
    def row_bytes(self) -> int:
        """About what one event costs on the wire: its vectors and its ids."""
        classes = 0 if self.logits is None else self.logits.shape[1]
        return 4 * (self.embedding.shape[1] + classes) + 96

    def take(self, rows: slice | np.ndarray) -> ScoreGroup:
        return ScoreGroup(self.model, self.event_id[rows], self.client_id[rows], self.ts[rows], self.confidence[rows],
                          self.kind[rows], self.anomalous[rows], self.detected[rows], self.embedding[rows],
                          None if self.logits is None else self.logits[rows])


@dataclass(frozen=True)
class ScoreRequestBatch:
    instance: str
    watermark: float
    groups: list[ScoreGroup]
    matches: MatchRequestBatch | None = None  # the batch's queries, for the scorer to pass on (remote matching)

    def chunks(self, max_bytes: int = 512 * 1024) -> list[ScoreRequestBatch]:
        """The request in messages of about ``max_bytes`` at most (Kafka refuses records over its message
        limit, 1 MB by default); one empty request when there are no groups. Only the last carries the
        batch's watermark: a scorer that has read part of a batch must not let the alerter close the
        windows the rest of it still feeds (the others carry none, -inf, and move nothing).

        >>> group = ScoreGroup("m", np.array(["a", "b", "c"], object), np.array(["c"] * 3, object), np.zeros(3),
        ...     np.ones(3), np.zeros(3, np.int8), np.zeros(3, bool), np.zeros(3, bool), np.ones((3, 1000), np.float32),
        ...     None)
        >>> [(sum(len(g) for g in c.groups), c.watermark) for c in ScoreRequestBatch("i", 1.0, [group]).chunks(9000)]
        [(2, -inf), (1, 1.0)]
        """
        if self.matches is not None:
            return self._paired_chunks(self.matches, max_bytes)
        parts: list[list[ScoreGroup]] = []
        current: list[ScoreGroup] = []
        room = max_bytes
        for group in self.groups:
            start = 0
            while start < len(group):
                rows = max(1, room // group.row_bytes)
                piece = group.take(slice(start, start + rows))
                current.append(piece)
                room -= len(piece) * group.row_bytes
                start += len(piece)
                if room < group.row_bytes:
                    parts.append(current)
                    current, room = [], max_bytes
        if current or not parts:
            parts.append(current)
        return [ScoreRequestBatch(self.instance, self.watermark if i == len(parts) - 1 else float("-inf"), groups)
                for i, groups in enumerate(parts)]

    def _paired_chunks(self, matches: MatchRequestBatch, max_bytes: int) -> list[ScoreRequestBatch]:
        """Messages of about ``max_bytes`` that each carry every part of their events, embeddings and queries:
        events cut in runs of their sorted ids by the bytes they take. Only the last carries the watermark and
        the input partitions' marks.

        >>> ids = np.array(["a", "b", "c"], object)
        >>> group = ScoreGroup("m", ids, ids, np.zeros(3), np.ones(3), np.zeros(3, np.int8), np.zeros(3, bool),
        ...     np.zeros(3, bool), np.ones((3, 1000), np.float32), None)
        >>> queries = MatchGroup("8", 2, ids, ids[::-1], ids, np.zeros(3), np.zeros(3, np.int8), np.zeros(3, bool),
        ...     np.ones(3), np.ones((3, 8), np.uint64), np.ones(3, np.uint64))
        >>> request = ScoreRequestBatch("i", 1.0, [group], MatchRequestBatch("i", 1.0, [queries], {"p-0": 1.0}))
        >>> [(c.groups[0].event_id.tolist(), c.matches.groups[0].event_id.tolist(), c.watermark,
        ...   c.matches.watermark, c.matches.partitions) for c in request.chunks(9000)]
        [(['a', 'b'], ['b', 'a'], -inf, -inf, {}), (['c'], ['c'], 1.0, 1.0, {'p-0': 1.0})]
        """
        if not (self.groups or matches.groups):
            return [self]
        parts: list[ScoreGroup | MatchGroup] = [*self.groups, *matches.groups]
        unique, event = np.unique(np.concatenate([g.event_id for g in parts]).astype(str), return_inverse=True)
        size = np.zeros(len(unique))
        np.add.at(size, event, np.concatenate([np.full(len(g), g.row_bytes, float) for g in parts]))
        # a run of ids per message, by where each event's bytes end (numbered densely)
        _, chunk_of = np.unique((np.cumsum(size) // max_bytes).astype(np.int64), return_inverse=True)
        count = int(chunk_of.max()) + 1
        where = np.split(chunk_of[event], np.cumsum([len(g) for g in parts])[:-1])
        scored, queried = where[:len(self.groups)], where[len(self.groups):]
        out = []
        for i in range(count):
            last = i == count - 1
            watermark = self.watermark if last else float("-inf")
            score_groups = [g.take(c == i) for g, c in zip(self.groups, scored, strict=True) if (c == i).any()]
            match_groups = [g.take(c == i) for g, c in zip(matches.groups, queried, strict=True) if (c == i).any()]
            out.append(ScoreRequestBatch(self.instance, watermark, score_groups, MatchRequestBatch(
                matches.instance, matches.watermark if last else float("-inf"), match_groups,
                matches.partitions if last else {}, matches.inputs)))
        return out

    def encode(self) -> bytes:
        groups: list[dict[str, Any]] = []
        matches = None if self.matches is None else self.matches.encode()
        header = {"v": VERSION, "instance": self.instance,
                  "watermark": self.watermark if np.isfinite(self.watermark) else None, "groups": groups,
                  "matches": None if matches is None else len(matches)}
        blobs = []
        for g in self.groups:
            groups.append({
                "model": g.model, "n": len(g), "dim": int(g.embedding.shape[1]),
                "classes": 0 if g.logits is None else int(g.logits.shape[1]),
                "event_id": g.event_id.tolist(), "client_id": g.client_id.tolist(), "ts": g.ts.tolist(),
                "confidence": g.confidence.tolist(), "kind": g.kind.tolist(), "anomalous": g.anomalous.tolist(),
                "detected": g.detected.tolist()})
            blobs.append(np.ascontiguousarray(g.embedding, np.float32).tobytes())
            if g.logits is not None:
                blobs.append(np.ascontiguousarray(g.logits, np.float32).tobytes())
        return framed(header, blobs if matches is None else [*blobs, matches])

    @classmethod
    def decode(cls, data: bytes) -> ScoreRequestBatch:
        with refusing("score-requests"):
            frame = FrameReader(data, "score-requests", VERSION)
            header, groups = frame.header, []
            for g in header["groups"]:
                n, dim, classes = g["n"], g["dim"], g["classes"]
                embedding = frame.array(np.float32, n * dim).reshape(n, dim)
                logits = frame.array(np.float32, n * classes).reshape(n, classes) if classes else None
                groups.append(ScoreGroup(
                    g["model"], np.asarray(g["event_id"], object), np.asarray(g["client_id"], object),
                    np.asarray(g["ts"], np.float64), np.asarray(g["confidence"], np.float64),
                    np.asarray(g["kind"], np.int8), np.asarray(g["anomalous"], bool), np.asarray(g["detected"], bool),
                    embedding, logits))
            size = header.get("matches")
            matches = None if size is None else MatchRequestBatch.decode(frame.raw(int(size)))
            frame.end()
        watermark = header["watermark"]
        return cls(header["instance"], float("-inf") if watermark is None else watermark, groups, matches)


def score_deltas(group: ScoreGroup, flagged: np.ndarray, bucket_s: int) -> tuple[SliRows, FlaggedEvents]:
    """The counter changes the scorer's flags make, and the newly anomalous events as evidence.

    ``anomalous`` counts events any input score flagged; the clean, miss and false-positive counters
    depend on whether any detector did (fingerprints included). Limitation: the first-offending time
    of detector misses cannot be taken back, so it may be earlier than with local scoring.
    """
    changed = np.flatnonzero(flagged & ~group.anomalous)
    kind, ts, newly_detected = group.kind[changed], group.ts[changed], ~group.detected[changed]
    production = kind == PRODUCTION
    unseen_production = production & newly_detected
    benign = (kind == BENIGN_CANARY) & newly_detected
    values = np.zeros((len(changed), len(VALUE_COLUMNS)))
    values[:, value_index("anomalous")] = production
    values[:, value_index("clean_events")] = -unseen_production.astype(float)
    values[:, value_index("clean_conf_sum")] = np.where(unseen_production, -group.confidence[changed], 0.0)
    values[:, value_index("adv_missed")] = -((kind == ADVERSARIAL_CANARY) & newly_detected).astype(float)
    values[:, value_index("benign_flagged")] = benign
    first = np.full((len(changed), len(BAD_COUNTERS)), np.inf)
    first[:, BAD_COUNTERS.index("anomalous")] = np.where(production, ts, np.inf)
    first[:, BAD_COUNTERS.index("benign_flagged")] = np.where(benign, ts, np.inf)
    model = np.full(len(changed), group.model, dtype=object)
    deltas = SliRows((ts // bucket_s).astype(np.int64) * bucket_s, model, group.client_id[changed], values, first)
    newly = changed[production]
    evidence = FlaggedEvents.of(group.event_id[newly], model[production], group.client_id[newly], group.ts[newly],
                                ["anomalous-embedding"] * len(newly), [""] * len(newly))
    return deltas.combined(), evidence
