"""The alerter's stored state, typed: the one codec between the entries the alerter works with and the
keys and JSON values of its key-value store (a faust table with a changelog in production).

Six kinds of entry: a bucket row per (model, client, bucket) with its summed counters, kept as long as
the per-client rules look back; the same summed over the model's clients per (model, bucket), kept as
long as the longest SLO window; the match edges between clients per (model, bucket); a source per ingest
or scorer instance with its watermark; evidence samples per (model, client); and the progress. Bucket,
total, edge and sample entries remember, per input topic, the offset of the message that last changed
them (idempotence under redelivery). Counters are stored as base64 float64 (a few hundred bytes a row).

>>> import numpy as np
>>> state = AlerterState({})
>>> state.put_bucket("m", "c", 60, BucketEntry({"sli-buckets": 3}, np.ones(2), np.array([61.0, np.inf])))
>>> entry = state.bucket("m", "c", 60)
>>> entry.reached("sli-buckets", 3), entry.reached("sli-buckets", 4), entry.first.tolist()
(True, False, [61.0, inf])
>>> [(model, client, bucket) for model, client, bucket, _ in state.buckets()]
[('m', 'c', 60)]
>>> state.put_total("m", 60, entry)
>>> state.expire_buckets(clients_before=120, totals_before=0), [b for _, b, _ in state.totals()]
(1, [60])
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.contracts.sli import VALUE_COLUMNS

_SEP = "\x1f"
_PROGRESS = "progress"
_BUCKET, _SOURCE, _SAMPLES, _EDGES, _TOTAL = "b", "s", "e", "g", "t"


def _finite_or_inf(values: list[float | None]) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in values], np.float64)


def full_width(stored: list[float] | np.ndarray) -> np.ndarray:
    """Stored values as a full row: entries written before columns were appended get zeros for them."""
    values = np.zeros(len(VALUE_COLUMNS))
    values[:len(stored)] = stored
    return values


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, "<f8").tobytes()).decode("ascii")


def _unpack(raw: str | list[float | None]) -> np.ndarray:
    """A stored array: base64 float64, or the JSON list of entries written before (null: inf)."""
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw), "<f8").copy()
    return _finite_or_inf(raw)


@dataclass(frozen=True)
class _Stamped:
    offsets: dict[str, int]  # input topic -> offset of the message that last changed the entry

    def reached(self, topic: str, offset: int) -> bool:
        """Whether the message at ``offset`` of ``topic`` already changed this entry."""
        return self.offsets.get(topic, -1) >= offset


def stamped(entry: _Stamped | None, topic: str, offset: int) -> dict[str, int]:
    """The offsets of ``entry`` with ``topic`` moved to ``offset``."""
    return {**(entry.offsets if entry else {}), topic: offset}


@dataclass(frozen=True)
class BucketEntry(_Stamped):
    values: np.ndarray  # the row's summed counters (columns as ``SliRows.values``)
    first: np.ndarray  # first offending event time per bad counter; inf where none


@dataclass(frozen=True)
class SamplesEntry(_Stamped):
    samples: list[tuple[str, str]]  # (event id, fingerprint), oldest first


@dataclass(frozen=True)
class EdgesEntry(_Stamped):
    edges: dict[tuple[str, str], float]  # (client, other client) -> matches


@dataclass(frozen=True)
class SourceEntry:
    seen: float  # wall time the source was last heard from
    watermark: float | None
    role: str = "ingest"
    remote: bool = False  # an ingest worker that leaves embeddings to a scorer
    remote_matching: bool = False  # an ingest worker that leaves query matching to a matcher


@dataclass(frozen=True)
class Progress:
    offsets: dict[str, int] = field(default_factory=dict)  # input topic -> last applied offset
    evaluated_until: int | None = None
    # Alert transitions (JSON) the last applied message released: written before they are published, so
    # a crash between this entry reaching the changelog and the alerts reaching their topic loses none.
    released: list[str] = field(default_factory=list)


class AlerterState:
    """Typed reads and writes over the raw store; the only place that knows its keys and value layout."""

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store

    def bucket(self, model: str, client: str, bucket: int) -> BucketEntry | None:
        raw = self.store.get(_SEP.join((_BUCKET, model, client, str(bucket))))
        return None if raw is None else _bucket(raw)

    def put_bucket(self, model: str, client: str, bucket: int, entry: BucketEntry) -> None:
        self.store[_SEP.join((_BUCKET, model, client, str(bucket)))] = _bucket_value(entry)

    def total(self, model: str, bucket: int) -> BucketEntry | None:
        """The model's counters of ``bucket`` summed over its clients."""
        raw = self.store.get(_SEP.join((_TOTAL, model, str(bucket))))
        return None if raw is None else _bucket(raw)

    def put_total(self, model: str, bucket: int, entry: BucketEntry) -> None:
        self.store[_SEP.join((_TOTAL, model, str(bucket)))] = _bucket_value(entry)

    def totals(self) -> Iterator[tuple[str, int, BucketEntry]]:
        for model, bucket, raw in self._of_kind(_TOTAL):
            yield model, int(bucket), _bucket(raw)

    def samples(self, model: str, client: str) -> SamplesEntry | None:
        raw = self.store.get(_SEP.join((_SAMPLES, model, client)))
        return None if raw is None else _samples(raw)

    def put_samples(self, model: str, client: str, entry: SamplesEntry) -> None:
        self.store[_SEP.join((_SAMPLES, model, client))] = {"o": entry.offsets,
                                                            "samples": [list(s) for s in entry.samples]}

    def edges(self, model: str, bucket: int) -> EdgesEntry | None:
        raw = self.store.get(_SEP.join((_EDGES, model, str(bucket))))
        return None if raw is None else _edges(raw)

    def put_edges(self, model: str, bucket: int, entry: EdgesEntry) -> None:
        self.store[_SEP.join((_EDGES, model, str(bucket)))] = {
            "o": entry.offsets, "e": [[a, b, n] for (a, b), n in entry.edges.items()]}

    def all_edges(self) -> Iterator[tuple[str, int, EdgesEntry]]:
        for model, bucket, raw in self._of_kind(_EDGES):
            yield model, int(bucket), _edges(raw)

    def put_source(self, instance: str, entry: SourceEntry) -> None:
        self.store[_SOURCE + _SEP + instance] = {"seen": entry.seen, "watermark": entry.watermark,
                                                 "role": entry.role, "remote": entry.remote,
                                                 "remote_matching": entry.remote_matching}

    @property
    def progress(self) -> Progress:
        raw = self.store.get(_PROGRESS)
        return Progress() if raw is None else Progress(dict(raw["offsets"]), raw["evaluated_until"],
                                                       list(raw.get("released", [])))

    def put_progress(self, progress: Progress) -> None:
        self.store[_PROGRESS] = {"offsets": progress.offsets, "evaluated_until": progress.evaluated_until,
                                 "released": progress.released}

    def buckets(self) -> Iterator[tuple[str, str, int, BucketEntry]]:
        for model, client, bucket, raw in self._of_kind(_BUCKET):
            yield model, client, int(bucket), _bucket(raw)

    def sources(self) -> Iterator[tuple[str, SourceEntry]]:
        for (instance, raw) in self._of_kind(_SOURCE):
            yield instance, SourceEntry(raw["seen"], raw["watermark"], raw.get("role", "ingest"),
                                        raw.get("remote", False), raw.get("remote_matching", False))

    def all_samples(self) -> Iterator[tuple[str, str, SamplesEntry]]:
        for model, client, raw in self._of_kind(_SAMPLES):
            yield model, client, _samples(raw)

    def expire_buckets(self, clients_before: int, totals_before: int) -> int:
        """Drop per-client rows and edges of buckets starting before ``clients_before``, per-model totals of
        buckets before ``totals_before`` (epoch seconds); returns how many entries went."""

        def stale(key: str) -> bool:
            kind, _, rest = key.partition(_SEP)
            before = clients_before if kind in (_BUCKET, _EDGES) else totals_before if kind == _TOTAL else None
            return before is not None and int(rest.rsplit(_SEP, 1)[-1]) < before

        gone = [k for k in list(self.store.keys()) if stale(k)]
        for key in gone:
            del self.store[key]
        return len(gone)

    def _of_kind(self, kind: str) -> Iterator[tuple[Any, ...]]:
        for key, raw in list(self.store.items()):
            if key == _PROGRESS:
                continue
            head, *parts = key.split(_SEP)
            if head == kind:
                yield (*parts, raw)


def _bucket_value(entry: BucketEntry) -> dict:
    return {"o": entry.offsets, "v": _pack(entry.values), "f": _pack(entry.first)}


def _bucket(raw: dict) -> BucketEntry:
    return BucketEntry(dict(raw["o"]), full_width(_unpack(raw["v"])), _unpack(raw["f"]))


def _edges(raw: dict) -> EdgesEntry:
    return EdgesEntry(dict(raw["o"]), {(a, b): float(n) for a, b, n in raw["e"]})


def _samples(raw: dict) -> SamplesEntry:
    return SamplesEntry(dict(raw["o"]), [(i, f) for i, f in raw["samples"]])
