"""Query matching behind the watermark: the ``match-requests`` message, from the engine to the matcher.

An engine fingerprints every raw input of a batch but matches none: it ships the fingerprints (never raw
inputs) with what it already decided about each event, and the matcher, which holds the query index, takes
each bucket's queries in event-time order once the watermark has passed it (:mod:`monitor.detect.matcher`).
The matcher runs in the ingest process (one worker's view) or as ``advmon matcher`` (one view over every
ingest worker). Every batch sends a request, even an empty one: its watermark tells the matcher how far
event time has got. Binary: a JSON header, then each group's hashes (``n x width`` uint64) and content hashes.

>>> import numpy as np
>>> group = MatchGroup(kind="64", threshold=15, model=np.array(["m", "m"], object),
...     event_id=np.array(["e1", "e2"], object), client_id=np.array(["a", "b"], object), ts=np.array([61.0, 62.0]),
...     traffic=np.array([PRODUCTION, BENIGN_CANARY], np.int8), anomalous=np.array([False, True]),
...     confidence=np.array([0.9, 0.8]), hashes=np.arange(60, dtype=np.uint64).reshape(2, 30),
...     exact=np.array([7, 8], np.uint64))
>>> back = MatchRequestBatch.decode(MatchRequestBatch("ingest-0", 62.0, [group]).encode())
>>> back.instance, back.watermark, back.groups[0].hashes.shape, back.groups[0].traffic.tolist()
('ingest-0', 62.0, (2, 30), [0, 2])
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from monitor.contracts.event_time import marks_from_wire, marks_to_wire
from monitor.contracts.framing import FrameReader, framed, refusing
from monitor.contracts.traffic import ADVERSARIAL_CANARY, BENIGN_CANARY, PRODUCTION
from monitor.errors import WireError

__all__ = ["ADVERSARIAL_CANARY", "BENIGN_CANARY", "PRODUCTION", "MatchGroup", "MatchRequestBatch"]

VERSION = 1
_COLUMNS = {"model": object, "event_id": object, "client_id": object, "ts": np.float64, "traffic": np.int8,
            "anomalous": bool, "confidence": np.float64}


@dataclass(frozen=True)
class MatchGroup:
    """The fingerprinted queries of one input kind (raw inputs of one length, or texts) of a batch."""

    kind: str  # the index they are matched in: the input length ("64"), or "text"
    threshold: int  # shared hashes that make two queries near-duplicates
    model: np.ndarray  # object
    event_id: np.ndarray  # object
    client_id: np.ndarray  # object
    ts: np.ndarray  # float64 event time
    traffic: np.ndarray  # int8: PRODUCTION | ADVERSARIAL_CANARY | BENIGN_CANARY
    anomalous: np.ndarray  # bool: the engine's profile scores flagged it already
    confidence: np.ndarray  # float64: the prediction's confidence (the clean-confidence sums)
    hashes: np.ndarray  # (n, width) uint64 fingerprint hashes, 0-padded
    exact: np.ndarray  # (n,) uint64 content hashes (exact repeats)

    def __len__(self) -> int:
        return len(self.event_id)

    @property
    def row_bytes(self) -> int:
        """About what one query costs on the wire: its hashes and its ids."""
        return 8 * self.hashes.shape[1] + 120

    def take(self, rows: np.ndarray | slice) -> MatchGroup:
        return MatchGroup(self.kind, self.threshold, *(getattr(self, f.name)[rows] for f in fields(self)[2:]))

    @classmethod
    def concat(cls, parts: list[MatchGroup]) -> MatchGroup:
        """Groups of one kind joined (the first part's kind and threshold)."""
        first = parts[0]
        return cls(first.kind, first.threshold,
                   *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)[2:]))


@dataclass(frozen=True)
class MatchRequestBatch:
    instance: str
    watermark: float
    groups: list[MatchGroup]
    partitions: dict[str, float] = field(default_factory=dict)  # input partition -> its watermark (-inf: none yet)
    inputs: tuple[str, int] = ("", 0)  # the input topic and its partition count: each one holds until reported

    def chunks(self, max_bytes: int = 512 * 1024) -> list[MatchRequestBatch]:
        """The request in messages of about ``max_bytes`` at most (Kafka's default message limit is 1 MB); only
        the last carries the watermark, so a matcher that has read part of a batch seals nothing the rest feeds.

        >>> g = MatchGroup("64", 15, *(np.zeros(5, t) for t in (object, object, object, float, np.int8, bool, float)),
        ...                np.ones((5, 30), np.uint64), np.ones(5, np.uint64))
        >>> [(sum(map(len, c.groups)), c.watermark) for c in MatchRequestBatch("i", 9.0, [g]).chunks(1100)]
        [(3, -inf), (2, 9.0)]
        """
        pieces = []
        for group in self.groups:
            rows = max(1, max_bytes // group.row_bytes)
            pieces += [group.take(slice(start, start + rows)) for start in range(0, len(group), rows)]
        parts: list[list[MatchGroup]] = [[]]
        room = max_bytes
        for piece in pieces:
            size = len(piece) * piece.row_bytes
            if parts[-1] and size > room:
                parts.append([])
                room = max_bytes
            parts[-1].append(piece)
            room -= size
        last = len(parts) - 1
        return [MatchRequestBatch(self.instance, self.watermark if i == last else float("-inf"), groups,
                                  self.partitions if i == last else {}, self.inputs) for i, groups in enumerate(parts)]

    def encode(self) -> bytes:
        groups: list[dict[str, Any]] = []
        blobs = []
        for g in self.groups:
            groups.append({"kind": g.kind, "threshold": g.threshold, "n": len(g), "width": int(g.hashes.shape[1]),
                           **{name: getattr(g, name).tolist() for name in _COLUMNS}})
            blobs += [np.ascontiguousarray(g.hashes, "<u8").tobytes(), np.ascontiguousarray(g.exact, "<u8").tobytes()]
        return framed({"v": VERSION, "instance": self.instance,
                       "watermark": self.watermark if np.isfinite(self.watermark) else None, "groups": groups,
                       "partitions": marks_to_wire(self.partitions), "inputs": list(self.inputs)}, blobs)

    @classmethod
    def decode(cls, data: bytes) -> MatchRequestBatch:
        with refusing("match-requests"):
            frame = FrameReader(data, "match-requests", VERSION)
            header, groups = frame.header, []
            for g in header["groups"]:
                n, width = g["n"], g["width"]
                hashes = frame.array("<u8", n * width).reshape(n, width).astype(np.uint64)
                exact = frame.array("<u8", n).astype(np.uint64)
                columns = {name: np.asarray(g[name], dtype) for name, dtype in _COLUMNS.items()}
                if any(len(c) != n for c in columns.values()):
                    raise WireError("match-requests group columns have different lengths")
                groups.append(MatchGroup(str(g["kind"]), int(g["threshold"]), hashes=hashes, exact=exact, **columns))
            frame.end()
        watermark = header["watermark"]
        topic, count = header.get("inputs", ("", 0))
        return cls(str(header["instance"]), float("-inf") if watermark is None else float(watermark), groups,
                   marks_from_wire(header.get("partitions", {})), (str(topic), int(count)))
