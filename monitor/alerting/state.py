"""The alerter's stored state, typed: the one codec between the entries the alerter works with and the
keys and JSON values of its key-value store (a faust table with a changelog in production).

Five kinds of entry: one per applied input message with its per-client rows and suspicious events, kept
as long as the per-client rules look back (one changelog record a message, not one a client); the rows
summed over the model's clients per (model, bucket), kept as long as the longest SLO window; the match
edges between clients per (model, bucket); a source per ingest or scorer instance with its watermark; and
the progress. A message entry is keyed by its topic and offset, which makes it idempotent under
redelivery; total and edge entries remember, per input topic, the offset of the message that last
changed them. Counters are stored as zlib-compressed float64 in base64 (45-105 bytes a row, suspicious
events included). Where a client's minute is spread over many messages (few clients, many batches a
minute), messages of closed buckets are folded (:meth:`AlerterState.fold`) into one row per (model,
client, bucket), so the store follows client-minutes, not batches.

Stores written by builds before message entries hold a row per (model, client, bucket) and evidence
samples per (model, client); they are still read (:meth:`AlerterState.buckets`,
:meth:`AlerterState.older_samples`) and the rows expire as message entries do.

>>> import numpy as np
>>> from monitor.contracts.sli import SliRows
>>> state = AlerterState({})
>>> rows = SliRows.from_columns(bucket=np.array([60, 120]), model=np.array(["m", "m"], dtype=object),
...     client=np.array(["a", "b"], dtype=object), ts=np.array([61.0, 125.0]),
...     flags={"events": np.ones(2, bool)}, confidence=np.ones(2))
>>> state.put_message("sli-buckets", 3, MessageEntry(rows, FlaggedEvents.empty()))
>>> state.has_message("sli-buckets", 3, newest=120), state.has_message("sli-buckets", 4, newest=120)
(True, False)
>>> [(topic, offset, e.rows.client.tolist()) for topic, offset, e in state.messages()]
[('sli-buckets', 3, ['a', 'b'])]
>>> state.put_total("m", 60, BucketEntry({"sli-buckets": 3}, rows.values[0], rows.first[0]))
>>> state.expire_buckets(clients_before=180, totals_before=0), [b for _, b, _ in state.totals()]
(1, [60])
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows

_SEP = "\x1f"
_PROGRESS = "progress"
_MESSAGE, _SOURCE, _EDGES, _TOTAL = "r", "s", "g", "t"
_BUCKET, _SAMPLES = "b", "e"  # written by builds before message entries: read, never written
_FOLDED = "folded"  # the topic of a fold's parts (closed messages merged)
_FOLD_SPAN = 1_000_000  # a fold's parts are numbered fold id x this + part
_FOLDS_KEY = _SEP.join((_MESSAGE, _FOLDED, ""))
FOLD_ROWS = 1_000  # rows (and events) in a part of a fold: under the broker's default 1 MB record (0.8 MB at worst)
FOLD_WORTH = 0.7  # fold where (model, client, bucket) keys are at most this share of the rows


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
class MessageEntry:
    """One applied input message's per-client rows and suspicious events (only their evidence columns)."""

    rows: SliRows
    flagged: FlaggedEvents

    @property
    def newest(self) -> int:
        """The start of the newest bucket among the rows (0 without rows): the entry expires after it."""
        return int(self.rows.bucket.max()) if len(self.rows) else 0


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

    def has_message(self, topic: str, offset: int, newest: int) -> bool:
        """Whether the message at ``offset`` of ``topic`` (rows up to bucket ``newest``) is stored."""
        return _SEP.join((_MESSAGE, topic, str(offset), str(newest))) in self.store

    def put_message(self, topic: str, offset: int, entry: MessageEntry) -> None:
        self.store[_SEP.join((_MESSAGE, topic, str(offset), str(entry.newest)))] = _message_value(entry)

    def messages(self) -> Iterator[tuple[str, int, MessageEntry]]:
        """Every stored message not folded and every complete fold's parts (topic ``folded``), by newest bucket,
        topic and offset: the order they were applied in within a topic, and across topics as near as their
        buckets tell."""
        for _, _, topic, offset, raw in self._current():
            yield topic, offset, _message(raw)

    def fold(self, after: float, before: int, per_key: int) -> int:
        """Merge the stored messages whose newest bucket starts in [``after``, ``before``) (closed: later rows of
        their buckets come in later messages) into one fold, and drop them, where that keeps at most
        ``FOLD_WORTH`` of their rows; returns how many messages were folded.

        A fold keeps one row per (model, client, bucket) and the latest ``per_key`` suspicious events per
        (model, client): a client's minute spread over many messages is stored once. Its parts (at most
        ``FOLD_ROWS`` rows and as many events each: under the broker's default record size even where every
        counter is an arbitrary float) are written before the messages are deleted, and a fold counts only
        once all its parts are stored, so a crash in between leaves every row stored exactly once."""
        closed = [(key, newest, raw) for key, newest, topic, _, raw in self._current()
                  if after <= newest < before and topic != _FOLDED]
        if len(closed) < 2 or not _worth_folding([raw for _, _, raw in closed]):
            return 0
        folds = [int(key.split(_SEP)[2]) // _FOLD_SPAN for key in self.store if key.startswith(_FOLDS_KEY)]
        fold_id = max(folds, default=-1) + 1  # after every fold stored, complete or not
        entries = [_message(raw) for _, _, raw in closed]
        rows = SliRows.concat([e.rows for e in entries]).combined()
        flagged = _latest(FlaggedEvents.concat([e.flagged for e in entries]), per_key)
        newest = max(newest for _, newest, _ in closed)
        parts = max(1, -(-len(rows) // FOLD_ROWS), -(-len(flagged) // FOLD_ROWS))
        for part, (these, evidence) in enumerate(zip(np.array_split(np.arange(len(rows)), parts),
                                                     np.array_split(np.arange(len(flagged)), parts), strict=True)):
            value = _message_value(MessageEntry(rows.take(these), flagged.take(evidence)))
            value["fold"] = {"parts": parts, "replaces": [key for key, _, _ in closed] if part == 0 else []}
            self.store[_SEP.join((_MESSAGE, _FOLDED, str(fold_id * _FOLD_SPAN + part), str(newest)))] = value
        for key, _, _ in closed:
            del self.store[key]
        return len(closed)

    def _current(self) -> list[tuple[str, int, str, int, dict]]:
        """(key, newest bucket, topic, offset, value) of the message entries that count, in message order:
        not replaced by a complete fold, and no part of a fold whose parts are not all stored."""
        stored = sorted((int(newest), topic, int(offset), _SEP.join((_MESSAGE, topic, offset, newest)), raw)
                        for topic, offset, newest, raw in self._of_kind(_MESSAGE))
        parts: dict[int, list[dict]] = {}
        for _, topic, offset, _, raw in stored:
            if topic == _FOLDED:
                parts.setdefault(offset // _FOLD_SPAN, []).append(raw["fold"])
        complete = {fold for fold, found in parts.items() if len(found) == found[0]["parts"]}
        replaced = {key for fold in complete for found in parts[fold] for key in found["replaces"]}
        return [(key, newest, topic, offset, raw) for newest, topic, offset, key, raw in stored
                if key not in replaced and (topic != _FOLDED or offset // _FOLD_SPAN in complete)]

    def total(self, model: str, bucket: int) -> BucketEntry | None:
        """The model's counters of ``bucket`` summed over its clients."""
        raw = self.store.get(_SEP.join((_TOTAL, model, str(bucket))))
        return None if raw is None else _bucket(raw)

    def put_total(self, model: str, bucket: int, entry: BucketEntry) -> None:
        self.store[_SEP.join((_TOTAL, model, str(bucket)))] = _bucket_value(entry)

    def totals(self) -> Iterator[tuple[str, int, BucketEntry]]:
        for model, bucket, raw in self._of_kind(_TOTAL):
            yield model, int(bucket), _bucket(raw)

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
        """Per-client rows as builds before message entries stored them."""
        for model, client, bucket, raw in self._of_kind(_BUCKET):
            yield model, client, int(bucket), _bucket(raw)

    def sources(self) -> Iterator[tuple[str, SourceEntry]]:
        for (instance, raw) in self._of_kind(_SOURCE):
            yield instance, SourceEntry(raw["seen"], raw["watermark"], raw.get("role", "ingest"),
                                        raw.get("remote", False), raw.get("remote_matching", False))

    def older_samples(self) -> FlaggedEvents:
        """Evidence samples as builds before message entries stored them (per model and client, oldest first)."""
        samples = [(i, model, client, f) for model, client, raw in self._of_kind(_SAMPLES) for i, f in raw["samples"]]
        return _evidence(*zip(*samples, strict=True)) if samples else FlaggedEvents.empty()

    def expire_buckets(self, clients_before: int, totals_before: int) -> int:
        """Drop messages and folds whose newest bucket, and per-client rows and edges whose bucket, starts
        before ``clients_before``, and per-model totals of buckets before ``totals_before`` (epoch seconds);
        returns how many entries went."""

        def stale(key: str) -> bool:
            kind, _, rest = key.partition(_SEP)
            before = (clients_before if kind in (_MESSAGE, _BUCKET, _EDGES) else totals_before if kind == _TOTAL
                      else None)
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


def _squeeze(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 1)).decode("ascii")


def _unsqueeze(raw: str) -> bytes:
    return zlib.decompress(base64.b64decode(raw))


def _message_value(entry: MessageEntry) -> dict:
    r, f = entry.rows, entry.flagged
    return {"n": len(r), "cols": [len(VALUE_COLUMNS), len(BAD_COUNTERS)],
            "keys": _squeeze(orjson.dumps([r.bucket.tolist(), r.model.tolist(), r.client.tolist()])),
            "v": _squeeze(np.ascontiguousarray(r.values, "<f8").tobytes()),
            "f": _squeeze(np.ascontiguousarray(r.first, "<f8").tobytes()),
            "flagged": _squeeze(orjson.dumps([f.event_id.tolist(), f.model.tolist(), f.client_id.tolist(),
                                              f.fingerprint.tolist()]))}


def _worth_folding(raws: list[dict]) -> bool:
    """Whether the messages' rows have few enough distinct keys to fold (only their keys decoded: a fold that
    saves nothing would cost as much as storing them again)."""
    keys = [orjson.loads(_unsqueeze(raw["keys"])) for raw in raws]
    rows = sum(raw["n"] for raw in raws)
    distinct = set(chain.from_iterable(zip(*columns, strict=True) for columns in keys))
    return len(distinct) <= FOLD_WORTH * rows


def _latest(flagged: FlaggedEvents, per_key: int) -> FlaggedEvents:
    """The last ``per_key`` events of each (model, client), in their order: the latest per model among them."""
    if not len(flagged):
        return flagged
    _, key = np.unique(np.char.add(flagged.model.astype(str), np.char.add(_SEP, flagged.client_id.astype(str))),
                       return_inverse=True)
    order = np.lexsort((-np.arange(len(flagged)), key))  # by key, the latest first
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))  # 0: a key's latest
    return flagged.take(np.sort(order[rank < per_key]))


def _message(raw: dict) -> MessageEntry:
    """A stored message; counter columns appended since it was written read as zeros."""
    n, (width, bad) = raw["n"], raw["cols"]
    buckets, models, clients = orjson.loads(_unsqueeze(raw["keys"]))
    values = np.zeros((n, len(VALUE_COLUMNS)))
    values[:, :width] = np.frombuffer(_unsqueeze(raw["v"]), "<f8").reshape(n, width)
    first = np.full((n, len(BAD_COUNTERS)), np.inf)
    first[:, :bad] = np.frombuffer(_unsqueeze(raw["f"]), "<f8").reshape(n, bad)
    rows = SliRows(np.array(buckets, np.int64), np.array(models, object), np.array(clients, object), values, first)
    return MessageEntry(rows, _evidence(*orjson.loads(_unsqueeze(raw["flagged"]))))


def _evidence(ids: Sequence[str], models: Sequence[str], clients: Sequence[str],
              fingerprints: Sequence[str]) -> FlaggedEvents:
    """Stored suspicious events: only the columns evidence samples keep (no time, no reason)."""
    return FlaggedEvents.of(ids, models, clients, [np.nan] * len(ids), [""] * len(ids), fingerprints)


def _bucket_value(entry: BucketEntry) -> dict:
    return {"o": entry.offsets, "v": _pack(entry.values), "f": _pack(entry.first)}


def _bucket(raw: dict) -> BucketEntry:
    return BucketEntry(dict(raw["o"]), full_width(_unpack(raw["v"])), _unpack(raw["f"]))


def _edges(raw: dict) -> EdgesEntry:
    return EdgesEntry(dict(raw["o"]), {(a, b): float(n) for a, b, n in raw["e"]})

