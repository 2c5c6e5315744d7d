"""The ``sli-buckets`` message: what an ingest worker tells the alerter about one batch.

Columnar JSON (orjson): SLI rows (the columns that are not all zero; a reader takes the others as
zero, so a build that adds counters reads an older build's messages), the suspicious events' evidence, the
worker's event-time watermark and the input offsets the batch covered. Encoded by ingest, validated once by the
alerter at its edge (msgspec's compiled decoder: half pydantic's time on these number tables).

>>> import numpy as np
>>> rows = SliRows.from_columns(bucket=np.array([60, 60]), model=np.array(["m", "m"], dtype=object),
...     client=np.array(["a", "b"], dtype=object), ts=np.array([61.0, 62.0]),
...     flags={"events": np.ones(2, bool), "anomalous": np.array([True, False])}, confidence=np.array([.5, .9]))
>>> msg = SliBatch(instance="ingest-0", watermark=62.0, late=0, offsets={"inference-logs/0": (10, 12)}, rows=rows)
>>> back = SliBatch.decode(msg.encode())
>>> back.rows.column("anomalous").tolist(), back.rows.first_bad("anomalous").tolist(), back.offsets
([1.0, 0.0], [61.0, inf], {'inference-logs/0': (10, 12)})
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import msgspec
import numpy as np
import orjson

from monitor.contracts.edges import MatchEdges
from monitor.contracts.event_time import marks_from_wire, marks_to_wire
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows
from monitor.errors import WireError

WIRE_VERSION = 1


class _Rows(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    bad_columns: list[str]
    bucket: list[int]
    model: list[str]
    client_id: list[str]
    values: list[list[float]]
    first_bad_ts: list[list[float | None]]


class _Flagged(msgspec.Struct, forbid_unknown_fields=True):
    event_id: list[str] = []
    model: list[str] = []
    client_id: list[str] = []
    fingerprint: list[str] = []
    ts: list[float | None] | None = None  # absent in messages of earlier builds; null: NaN (not measured)
    reason: list[str] | None = None


class _Edges(msgspec.Struct, forbid_unknown_fields=True):
    bucket: list[int] = []
    model: list[str] = []
    client: list[str] = []
    other: list[str] = []
    count: list[float] = []


class _Message(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    v: int
    instance: str
    role: Literal["ingest", "scorer", "matcher"] = "ingest"
    remote_scoring: bool = False
    remote_matching: bool = False
    watermark: float | None
    late: int = 0
    offsets: dict[str, tuple[int, int]]
    rows: _Rows
    suspicious: _Flagged = msgspec.field(default_factory=_Flagged)
    edges: _Edges = msgspec.field(default_factory=_Edges)  # absent in messages of earlier builds
    partitions: dict[str, float | None] = {}  # absent in messages of earlier builds
    input_topic: str = ""
    input_partitions: Annotated[int, msgspec.Meta(ge=0)] = 0
    population: _Rows | None = None  # absent in messages of earlier builds and of an unsharded alerter


_DECODER = msgspec.json.Decoder(_Message)


@dataclass(frozen=True)
class SliBatch:
    instance: str
    watermark: float
    late: int
    offsets: dict[str, tuple[int, int]]  # "topic/partition" -> [first, end) offsets covered
    rows: SliRows
    flagged: FlaggedEvents = field(default_factory=FlaggedEvents.empty)
    role: str = "ingest"  # or "scorer", "matcher": their rows are counter changes to events ingest counted
    remote_scoring: bool = False  # an ingest worker that left embeddings to the scorer: wait for it
    edges: MatchEdges = field(default_factory=MatchEdges.empty)  # which clients' queries matched whose
    remote_matching: bool = False  # an ingest worker that left query matching to the matcher: wait for it
    partitions: dict[str, float] = field(default_factory=dict)  # input partition -> its watermark (-inf: none yet)
    inputs: tuple[str, int] = ("", 0)  # the input topic and its partition count: each one holds until reported
    #: On a sharded alerter's partitions (:mod:`monitor.contracts.shards`): the whole batch's rows summed per
    #: (model, bucket), client ``""``, for the live population every shard judges its clients against.
    population: SliRows | None = None

    def chunks(self, max_bytes: int = 512 * 1024) -> list[SliBatch]:
        """The message as messages of about ``max_bytes`` at most (Kafka's default message limit is 1 MB): the rows,
        evidence and edges shared out in order; only the last carries the watermark, so the alerter closes no
        window before every part is in. For messages without partition marks (the matcher's: a batch of a backlog
        matches many minutes at once).

        >>> rows = SliRows.from_columns(bucket=np.arange(2000) * 60, model=np.array(["m"] * 2000, dtype=object),
        ...     client=np.array(["c"] * 2000, dtype=object), ts=np.zeros(2000), flags={"events": np.ones(2000, bool)},
        ...     confidence=np.ones(2000))
        >>> parts = SliBatch("matcher-0", 99.0, 0, {}, rows, role="matcher").chunks(max_bytes=20_000)
        >>> len(parts) > 1, sum(len(p.rows) for p in parts), [p.watermark for p in parts][-2:]
        (True, 2000, [-inf, 99.0])
        """
        if self.partitions:
            raise ValueError("only a message without partition marks is cut in parts")
        size = len(self.encode())
        if size <= max_bytes:
            return [self]
        n = -(-2 * size // max_bytes)  # parts of about half the limit: rows are not all the same size
        cut = [np.array_split(np.arange(len(x)), n) for x in (self.rows, self.flagged, self.edges)]
        return [replace(self, watermark=self.watermark if i == n - 1 else -np.inf, late=self.late if i == 0 else 0,
                        rows=self.rows.take(cut[0][i]), flagged=self.flagged.take(cut[1][i]),
                        edges=self.edges.take(cut[2][i])) for i in range(n)]

    def encode(self) -> bytes:
        r, e = self.rows, self.flagged
        extra = {} if self.population is None else {"population": _rows_to_wire(self.population)}
        return orjson.dumps({
            "v": WIRE_VERSION, "instance": self.instance, "role": self.role, "remote_scoring": self.remote_scoring,
            "remote_matching": self.remote_matching,
            "partitions": marks_to_wire(self.partitions),
            "input_topic": self.inputs[0], "input_partitions": self.inputs[1],
            "watermark": self.watermark if np.isfinite(self.watermark) else None,
            "late": self.late, "offsets": self.offsets,
            "rows": _rows_to_wire(r),
            "suspicious": {"event_id": e.event_id.tolist(), "model": e.model.tolist(),
                           "client_id": e.client_id.tolist(), "fingerprint": e.fingerprint.tolist(),
                           "ts": e.ts.tolist(), "reason": e.reason.tolist()},
            "edges": {"bucket": self.edges.bucket.tolist(), "model": self.edges.model.tolist(),
                      "client": self.edges.client.tolist(), "other": self.edges.other.tolist(),
                      "count": self.edges.count.tolist()},
            **extra,
        }, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def decode(cls, data: bytes) -> SliBatch:
        try:
            msg = _DECODER.decode(data)
        except msgspec.MsgspecError as exc:
            raise WireError(f"invalid sli-buckets message: {exc}") from None
        if msg.v != WIRE_VERSION:
            raise WireError(f"sli-buckets message version {msg.v}; this build reads {WIRE_VERSION}")
        rows = _rows_from_wire(msg.rows)
        s = msg.suspicious
        n_flagged = len(s.event_id)
        ts = np.asarray([np.nan] * n_flagged if s.ts is None else s.ts, np.float64)  # null: NaN
        reason = [""] * n_flagged if s.reason is None else s.reason
        if not (len(s.model) == len(s.client_id) == len(s.fingerprint) == len(ts) == len(reason) == n_flagged):
            raise WireError("sli-buckets suspicious columns have different lengths")
        flagged = FlaggedEvents.of(s.event_id, s.model, s.client_id, ts, reason, s.fingerprint)
        g = msg.edges
        if not (len(g.bucket) == len(g.model) == len(g.client) == len(g.other) == len(g.count)):
            raise WireError("sli-buckets edge columns have different lengths")
        edges = MatchEdges.of(g.bucket, g.model, g.client, g.other, g.count)
        return cls(msg.instance, -np.inf if msg.watermark is None else msg.watermark, msg.late, dict(msg.offsets),
                   rows, flagged, msg.role, msg.remote_scoring, edges, msg.remote_matching,
                   marks_from_wire(msg.partitions),
                   (msg.input_topic, msg.input_partitions),
                   None if msg.population is None else _rows_from_wire(msg.population))


def _rows_to_wire(r: SliRows) -> dict:
    """The rows' columns that are not all zero (all-``inf`` first times): the others read as such. Numeric columns
    stay arrays: orjson writes them as it writes lists (NaN as null), without a Python float per value."""
    kept = np.flatnonzero(r.values.any(axis=0)) if len(r) else np.arange(0)
    timed = np.flatnonzero(np.isfinite(r.first).any(axis=0)) if len(r) else np.arange(0)
    first = r.first[:, timed]
    return {"columns": [VALUE_COLUMNS[i] for i in kept], "bad_columns": [BAD_COUNTERS[i] for i in timed],
            "bucket": np.ascontiguousarray(r.bucket, np.int64), "model": r.model.tolist(),
            "client_id": r.client.tolist(),
            "values": np.ascontiguousarray(r.values[:, kept], np.float64),
            "first_bad_ts": np.ascontiguousarray(np.where(np.isfinite(first), first, np.nan))}


def _positions(names: list[str], known: tuple[str, ...], what: str) -> np.ndarray:
    """Where each named column goes in this build's table; WireError for names it does not know."""
    index = {name: i for i, name in enumerate(known)}
    unknown = [name for name in names if name not in index]
    if unknown or len(set(names)) != len(names):
        raise WireError(f"sli-buckets {what} {unknown or 'repeated'} are not this build's counters; upgrade the "
                        "alerter before ingest, scorer and matcher")
    return np.array([index[name] for name in names], np.int64)


def _rows_from_wire(r: _Rows) -> SliRows:
    columns = _positions(r.columns, VALUE_COLUMNS, "columns")
    bad_columns = _positions(r.bad_columns, BAD_COUNTERS, "bad_columns")
    n = len(r.bucket)
    if not (len(r.model) == len(r.client_id) == len(r.values) == len(r.first_bad_ts) == n):
        raise WireError("sli-buckets row columns have different lengths")
    try:
        given = np.asarray(r.values, np.float64).reshape(n, len(columns))
        given_first = np.asarray(r.first_bad_ts, np.float64).reshape(n, len(bad_columns))  # null: NaN
    except ValueError:
        raise WireError("sli-buckets rows have values or first_bad_ts of the wrong width") from None
    if len(columns) == len(VALUE_COLUMNS) and (columns == np.arange(len(columns))).all():
        values = given
    else:
        values = np.zeros((n, len(VALUE_COLUMNS)))
        values[:, columns] = given
    first = np.full((n, len(BAD_COUNTERS)), np.inf)
    first[:, bad_columns] = np.where(np.isnan(given_first), np.inf, given_first)
    return SliRows(np.asarray(r.bucket, np.int64), np.asarray(r.model, object), np.asarray(r.client_id, object),
                   values, first)
