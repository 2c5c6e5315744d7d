"""The alerter's state kept in a key-value store (a faust table with a changelog in production), so
a restarted alerter resumes its windows and open alerts instead of starting blind.

What is stored is the input: one entry per applied message with its per-client rows and suspicious
events, for as long as the per-client rules look back (``client_retention_s``: their decay and
hysteresis, three hours with the shipped rules), the rows summed per (model, bucket) for as long as
the longest SLO window (``retention_s``), the match edges, one entry per ingest instance with its
watermark, and the evaluation progress. A message is one changelog record, however many clients it
speaks for (a record per client was the faust alerter's whole cost); every few buckets the messages of
closed buckets are folded into one row per (model, client, bucket) where that saves rows. The in-memory
:class:`~monitor.alerting.alerter.Alerter` is a cache rebuilt from the store on start by evaluating
the stored buckets again in event time with notifications suppressed (per-model sums first, for the
evaluators that read only those, then the stored messages' per-client rows, summed per (model,
client, bucket)); the evaluation is deterministic, so the rebuilt lifecycle (open alerts,
hysteresis, drift detectors) is the one that was lost. An alert open for longer than the per-client
history is rebuilt as firing from the start of that history.

Idempotent under redelivery: a message entry is keyed by its input topic (``sli-buckets`` from
ingest, ``scores`` from the scorer) and offset, the other entries remember per input topic the
offset of the message that last changed them, and a message is applied to an entry only once (a
stored message's rows are in the in-memory alerter already: applied live, or taken in by the
rebuild). Writes go in message order, with the progress entry last, so a crash between any two
writes leaves a state that re-applying the message completes. The progress entry carries the
transitions its message released: a crash after it is stored but before they are published leaves
them in ``unconfirmed`` for the restarted process to publish (again: consumers of alerts drop
repeats by ``alert_id``).

On a sharded alerter (``role`` ``"models"`` or ``"clients"``, one object per partition, each over its own part
of the store) the per-model totals are the messages' ``population`` (every client's rows summed, not only the
partition's) and are replayed for every stored bucket at a rebuild, beside the partition's per-client rows.

Time is a parameter: ``now`` (wall seconds) only decides which ingest instances count as idle.

>>> import numpy as np
>>> from monitor.spec.rules import load_rules_text
>>> from monitor.contracts.sli import SliRows
>>> from monitor.contracts.sli_buckets import SliBatch
>>> rules = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, min_events: 5, "
...                         "severities: [page]}]")
>>> def batch(bucket, bad, watermark):
...     n = 10; rows = SliRows.from_columns(bucket=np.full(n, bucket), model=np.array(["m"] * n, dtype=object),
...         client=np.array(["c"] * n, dtype=object), ts=np.full(n, bucket + 1.0),
...         flags={"traffic_events": np.ones(n, bool), "anomalous": np.arange(n) < bad}, confidence=np.ones(n))
...     return SliBatch("ingest-0", watermark, 0, {"inference-logs/0": (0, n)}, rows)
>>> store = {}
>>> a = DurableAlerter(rules, store, bucket_s=60, grace_s=0)
>>> a.apply(0, batch(0, 0, 30.0), now=0.0) + a.apply(1, batch(60, 9, 90.0), now=0.0)
[]
>>> [x.status for x in a.apply(2, batch(120, 9, 150.0), now=0.0)]
['firing']
>>> a.apply(2, batch(120, 9, 150.0), now=0.0)   # redelivered: already applied, nothing fires twice
[]
>>> b = DurableAlerter(rules, store, bucket_s=60, grace_s=0)   # a restart: same store, state rebuilt
>>> [x.status for x in b.firing], [x.status for x in b.unconfirmed]   # the last message's, maybe unsent
(['firing'], ['firing'])
>>> b.apply(3, batch(180, 9, 210.0), now=0.0), b.unconfirmed
([], [])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from monitor.alerting.alerter import Alerter
from monitor.alerting.state import AlerterState, BucketEntry, EdgesEntry, MessageEntry, Progress, SourceEntry, stamped
from monitor.contracts.alerts import Alert
from monitor.contracts.edges import MatchEdges
from monitor.contracts.event_time import reported_sources
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import Rules

log = logging.getLogger("advmon.durable")
EXPIRE_EVERY_BUCKETS = 5  # a sweep over the store's keys (expiry, then a fold) every five buckets of event time


class DurableAlerter:
    def __init__(self, rules: Rules, store: MutableMapping[str, Any], bucket_s: int = 60, grace_s: float = 60.0,
                 idle_source_s: float = 120.0, retention_s: float | None = None,
                 baselines: Mapping[str, Mapping[str, float]] | None = None, role: str = "all") -> None:
        self.rules = rules
        self.baselines = baselines
        self.role = role  # "all", or a sharded alerter's "models" or "clients" (monitor.contracts.shards)
        self.state = AlerterState(store)
        self.bucket_s = bucket_s
        self.grace_s = grace_s
        self.idle_source_s = idle_source_s
        horizon = max([slo.horizon_s for slo in rules.slos] + [24 * 3600])
        self.retention_s = retention_s or horizon + 2 * bucket_s + grace_s  # per-model totals
        self.client_retention_s = 0.0  # per-client rows and edges: what the rules' evaluators need (set below)
        self._sources: dict[str, SourceEntry] = dict(self.state.sources())  # read on every message: kept at hand
        self._resumed_at: float | None = None  # wall time of the first message applied since the state was read
        self._expected = self.state.progress  # the progress this object last read or wrote
        self.alerter = self._rebuild()
        self.skipped_messages = 0
        self.applied_messages = 0
        self._expired_at = self.alerter.evaluated_until
        self._offered_to_fold = float("-inf")  # messages whose newest bucket is older were offered to a fold

    @property
    def firing(self) -> list[Alert]:
        return self.alerter.firing

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def unconfirmed(self) -> list[Alert]:
        """The transitions the last applied message released: a process that died after storing its
        progress may not have published them, so a restarted alerter publishes them again (the alert
        consumer drops those it already handled, by ``alert_id``)."""
        return [Alert.model_validate_json(raw) for raw in self.state.progress.released]

    def apply(self, offset: int, batch: SliBatch, now: float, topic: str = "sli-buckets") -> list[Alert]:
        """Apply one message at ``offset`` of an input ``topic`` (``sli-buckets`` from ingest, ``scores``
        from the scorer); returns the alerts its watermark released."""
        progress, resent = self.state.progress, []
        if self._resumed_at is None:
            self._resumed_at = now
        if progress != self._expected:  # written by another process: its changelog records arrived late
            log.warning("alerter state advanced underneath (offsets %s, not %s): rebuilt from it", progress.offsets,
                        self._expected.offsets)
            self._sources = dict(self.state.sources())
            self._resumed_at = now
            self._expected = progress
            self.alerter = self._rebuild()
            resent = self.unconfirmed
        if offset <= progress.offsets.get(topic, -1):
            self.skipped_messages += 1
            log.info("%s offset %d skipped: the state has applied it (through %d)", topic, offset,
                     progress.offsets[topic])
            return resent
        fresh = self._store_message(topic, offset, batch)
        sharded = self.role != "all"
        population = batch.population if sharded and batch.population is not None else batch.rows
        fresh_totals = self._merge_totals(topic, offset, population)
        self.alerter.samples.add(fresh.flagged)
        self.alerter.ingest(fresh.rows, edges=self._merge_edges(topic, offset, batch.edges))
        if sharded:
            self.alerter.ingest_totals(fresh_totals)
        self._note_source(batch, now)
        alerts = self.alerter.advance(self.watermark(now))
        self._expected = Progress({**progress.offsets, topic: offset}, self.alerter.evaluated_until,
                                  [a.to_json().decode() for a in alerts])
        self.state.put_progress(self._expected)
        self.applied_messages += 1
        self._expire()
        return resent + alerts

    def watermark(self, now: float) -> float:
        """The slowest source's watermark, among ingest, scorer and matcher instances heard from in the last
        ``idle_source_s``; while an ingest worker leaves embeddings to a scorer (or queries to a matcher), no
        window closes before a scorer (a matcher) has reported, nor past what ingest has reported (a scorer's message
        can come before the ingest message of the same minutes).

        A source read back from the state counts as heard from when this object resumed (its first message): the
        wall time it was last heard from was another process's, before a restart or a hand-over that may have taken
        longer than ``idle_source_s``, and its messages since are still ahead in the backlog. Counted idle, the first
        message read would move the watermark past theirs, and windows would close without them."""
        resumed = now if self._resumed_at is None else self._resumed_at
        active = [s for s in self._sources.values() if now - max(s.seen, resumed) <= self.idle_source_s]
        for waits, role in (("remote", "scorer"), ("remote_matching", "matcher")):
            if any(getattr(s, waits) for s in active) and not any(s.role == role for s in active):
                return float("-inf")
        marks = [s.watermark for s in active]
        if not marks or any(m is None for m in marks):
            return float("-inf")
        return min(min(m for m in marks if m is not None), self._ingest_reached())

    def _ingest_reached(self) -> float:
        """The furthest any ingest source has reported here: a scorer's or matcher's watermark is one an ingest worker
        reached first, and the alerter reads their topics apart, so their message can come before ingest's rows of the
        same minutes (once, at a start, before any ingest message): those minutes must not close without them."""
        return max((s.watermark for s in self._sources.values() if s.role == "ingest" and s.watermark is not None),
                   default=float("-inf"))

    def _store_message(self, topic: str, offset: int, batch: SliBatch) -> MessageEntry:
        """Store a message's rows and suspicious events as one entry; returns what the alerter has not seen
        (nothing where the entry was stored before a restart: the rebuild took it in)."""
        entry = MessageEntry(batch.rows, batch.flagged)
        if self.state.has_message(topic, offset, entry.newest):
            return MessageEntry(SliRows.empty(), FlaggedEvents.empty())
        if len(entry.rows) or len(entry.flagged):
            self.state.put_message(topic, offset, entry)
        return entry

    def _merge_totals(self, topic: str, offset: int, rows: SliRows) -> SliRows:
        """Add a message's rows, summed per (model, bucket), to the stored totals (all its rows: a crash may
        have stored its per-client rows and not yet these); returns the sums not stored before."""
        totals = rows.model_totals()
        fresh = np.zeros(len(totals), bool)
        for i, (bucket, model) in enumerate(zip(totals.bucket.tolist(), totals.model.tolist(), strict=True)):
            entry = self.state.total(model, bucket)
            if entry is None or not entry.reached(topic, offset):
                self.state.put_total(model, bucket, _merged(entry, topic, offset, totals, i))
                fresh[i] = True
        return totals.take(fresh)

    def _merge_edges(self, topic: str, offset: int, edges: MatchEdges) -> MatchEdges:
        """Add a message's match edges to their (model, bucket) entries; returns the edges not seen before."""
        fresh = np.zeros(len(edges), bool)
        for model, bucket in dict.fromkeys(zip(edges.model.tolist(), edges.bucket.tolist(), strict=True)):
            entry = self.state.edges(model, bucket)
            if entry is not None and entry.reached(topic, offset):
                continue
            mine = (edges.model == model) & (edges.bucket == bucket)
            merged = dict(entry.edges) if entry else {}
            for a, b, n in zip(edges.client[mine].tolist(), edges.other[mine].tolist(), edges.count[mine].tolist(),
                               strict=True):
                merged[(a, b)] = merged.get((a, b), 0.0) + n
            self.state.put_edges(model, bucket, EdgesEntry(stamped(entry, topic, offset), merged))
            fresh |= mine
        return edges.take(fresh)

    def _note_source(self, batch: SliBatch, now: float) -> None:
        """Every source the message speaks for (``monitor.contracts.event_time``: its instance, the input
        partitions it reports, those no one has reported yet); a source's watermark only grows, so re-applying a
        message cannot move it back."""
        sources = reported_sources(batch.instance, batch.watermark, batch.partitions, batch.inputs, self._sources)
        for name, mark in sources:
            known = self._sources.get(name)
            previous = known.watermark if known is not None and known.watermark is not None else float("-inf")
            watermark = max(previous, mark)
            entry = SourceEntry(now, watermark if np.isfinite(watermark) else None, batch.role, batch.remote_scoring,
                                batch.remote_matching)
            self.state.put_source(name, entry)
            self._sources[name] = entry

    def _client_cutoff(self, until: int | None) -> float:
        """The start (epoch seconds) of the oldest bucket whose per-client rows are kept at ``until``."""
        if until is None:
            return float("-inf")
        return float((until - math.ceil(self.client_retention_s / self.bucket_s)) * self.bucket_s)

    def _rebuild(self) -> Alerter:
        alerter = Alerter(self.rules, self.bucket_s, self.grace_s, self.baselines, self.role)
        self.client_retention_s = alerter.client_history_s + 2 * self.bucket_s + self.grace_s
        messages = [entry for _, _, entry in self.state.messages()]
        alerter.samples.add(FlaggedEvents.concat([self.state.older_samples(), *(m.flagged for m in messages)]))
        until = self.state.progress.evaluated_until
        rows = self._stored_rows(self._client_cutoff(until), [m.rows for m in messages])
        if len(rows):
            replayed = self._replay(alerter, rows, until, self._stored_edges())
            log.info("alerter state rebuilt: %d bucket rows, evaluated through bucket %s, %d alerts open "
                     "(%d transitions replayed, not re-sent)", len(rows), until, len(alerter.firing), replayed)
        return alerter

    def _stored_rows(self, cutoff: float, messages: list[SliRows]) -> SliRows:
        """Per-model totals, then the per-client rows of the stored messages (and of a store written before
        messages) from ``cutoff`` on, one per (model, client, bucket); in bucket order. Unsharded, the totals of
        the buckets before ``cutoff`` (summed from per-client rows where none was stored, as by a version before
        totals); sharded, the population's totals of every bucket kept (a client shard keeps them as long as its
        clients' rows)."""
        written_before = _table(list(self.state.buckets()))
        clients = SliRows.concat([written_before, *messages]).combined()
        totals = _table([(model, "", bucket, entry) for model, bucket, entry in self.state.totals()])
        if self.role == "all":
            older = clients.take(clients.bucket < cutoff).model_totals()
            stored = set(zip(totals.model.tolist(), totals.bucket.tolist(), strict=True))
            keys = zip(older.model.tolist(), older.bucket.tolist(), strict=True)
            unstored = np.array([key not in stored for key in keys], bool)
            sums = [totals.take(totals.bucket < cutoff), older.take(unstored)]
        else:
            sums = [totals.take(totals.bucket >= cutoff) if self.role == "clients" else totals]
        rows = SliRows.concat([*sums, clients.take(clients.bucket >= cutoff)])
        return rows.take(np.argsort(rows.bucket, kind="stable"))

    def _stored_edges(self) -> MatchEdges:
        stored = [(bucket, model, a, b, n) for model, bucket, entry in self.state.all_edges()
                  for (a, b), n in entry.edges.items()]
        if not stored:
            return MatchEdges.empty()
        bucket, model, client, other, count = zip(*stored, strict=True)
        return MatchEdges.of(bucket, model, client, other, count)

    def _replay(self, alerter: Alerter, rows: SliRows, until: int | None, edges: MatchEdges) -> int:
        """Feed stored rows and edges bucket by bucket, evaluating as the live watermark did (``grace`` behind)."""
        index = rows.bucket // self.bucket_s
        lag = 1 + int(np.ceil(self.grace_s / self.bucket_s))
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        transitions = 0
        for start, end in zip(starts, np.r_[starts[1:], len(index)], strict=True):
            if until is not None and alerter.evaluated_until is not None:
                transitions += len(alerter.evaluate_until(min(int(index[start]) - lag, until)))
            bucket, these = int(rows.bucket[start]), rows.take(np.arange(start, end))
            totals = these.client == ""  # per-model sums: older than the per-client history, or sharded
            alerter.ingest_totals(these.take(totals))
            if not totals.all() or (alerter.role != "all" and (edges.bucket == bucket).any()):
                alerter.ingest(these.take(~totals), edges=edges.take(edges.bucket == bucket))
        if until is not None:
            transitions += len(alerter.evaluate_until(until))
        alerter.take_closed_totals()  # exported before the restart; counters must not count them again
        alerter.take_closed_rows()
        return transitions

    def _expire(self) -> None:
        """Drop per-client rows older than the per-client rules look back, totals older than the longest
        window (plus grace): memory follows the active clients of the last hours, not of the last days; then
        fold the messages of buckets closed since the last sweep (memory follows client-minutes, not batches)."""
        until = self.alerter.evaluated_until
        if until is None or (self._expired_at is not None and until - self._expired_at < EXPIRE_EVERY_BUCKETS):
            return
        self._expired_at = until
        clients_before = int(self._client_cutoff(until))
        totals_before = int((until - self.retention_s // self.bucket_s) * self.bucket_s)
        self.state.expire_buckets(clients_before=clients_before,
                                  totals_before=clients_before if self.role == "clients" else totals_before)
        before = until * self.bucket_s
        folded = self.state.fold(after=self._offered_to_fold, before=before, per_key=self.alerter.samples.per_key)
        if folded:
            log.info("alerter state: %d messages of buckets before %d folded to a row per client and bucket", folded,
                     before)
        self._offered_to_fold = before  # folded or not worth it: not offered again


def _merged(entry: BucketEntry | None, topic: str, offset: int, rows: SliRows, i: int) -> BucketEntry:
    """Row ``i`` of ``rows`` added to a stored entry (or a new one), stamped with the message."""
    values, first = rows.values[i], rows.first[i]
    if entry is not None:
        values, first = values + entry.values, np.minimum(first, entry.first)
    return BucketEntry(stamped(entry, topic, offset), values, first)


def _table(stored: list[tuple[str, str, int, BucketEntry]]) -> SliRows:
    """Stored entries as rows (model, client, bucket, entry)."""
    if not stored:
        return SliRows.empty()
    models, clients, buckets, entries = zip(*stored, strict=True)
    return SliRows(np.array(buckets, np.int64), np.array(models, object), np.array(clients, object),
                   np.array([e.values for e in entries], np.float64).reshape(len(stored), len(VALUE_COLUMNS)),
                   np.array([e.first for e in entries], np.float64).reshape(len(stored), len(BAD_COUNTERS)))
