"""The alerter's state kept in a key-value store (a faust table with a changelog in production), so
a restarted alerter resumes its windows and open alerts instead of starting blind.

What is stored is the input, merged: one entry per (model, client, bucket) with its summed
counters, one per ingest instance with its watermark, the alert evidence, and the evaluation
progress. The in-memory :class:`~monitor.alerting.alerter.Alerter` is a cache rebuilt from the store on
start by evaluating the stored buckets again in event time with notifications suppressed; the
evaluation is deterministic, so the rebuilt lifecycle (open alerts, hysteresis, drift detectors)
is the one that was lost.

Idempotent under redelivery: every entry remembers, per input topic (``sli-buckets`` from ingest,
``scores`` from the scorer), the offset of the message that last changed it, and a message is
applied to an entry only once. Writes go in message order, with the
progress entry last, so a crash between any two writes leaves a state that re-applying the
message completes.

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
>>> [x.status for x in b.firing], b.apply(3, batch(180, 9, 210.0), now=0.0)
(['firing'], [])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from monitor.alerting.alerter import Alerter
from monitor.alerting.state import AlerterState, BucketEntry, EdgesEntry, Progress, SamplesEntry, SourceEntry, stamped
from monitor.contracts.alerts import Alert
from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import BAD_COUNTERS, SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import Rules

log = logging.getLogger("advmon.durable")


class DurableAlerter:
    def __init__(self, rules: Rules, store: MutableMapping[str, Any], bucket_s: int = 60, grace_s: float = 60.0,
                 idle_source_s: float = 120.0, retention_s: float | None = None,
                 baselines: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.rules = rules
        self.baselines = baselines
        self.state = AlerterState(store)
        self.bucket_s = bucket_s
        self.grace_s = grace_s
        self.idle_source_s = idle_source_s
        horizon = max([slo.horizon_s for slo in rules.slos] + [24 * 3600])
        self.retention_s = retention_s or horizon + 2 * bucket_s + grace_s
        self._sources: dict[str, SourceEntry] = dict(self.state.sources())  # read on every message: kept at hand
        self.alerter = self._rebuild()
        self.skipped_messages = 0
        self.applied_messages = 0

    @property
    def firing(self) -> list[Alert]:
        return self.alerter.firing

    @property
    def progress(self) -> Progress:
        return self.state.progress

    def apply(self, offset: int, batch: SliBatch, now: float, topic: str = "sli-buckets") -> list[Alert]:
        """Apply one message at ``offset`` of an input ``topic`` (``sli-buckets`` from ingest, ``scores``
        from the scorer); returns the alerts its watermark released."""
        progress = self.state.progress
        if offset <= progress.offsets.get(topic, -1):
            self.skipped_messages += 1
            return []
        fresh = self._merge_rows(topic, offset, batch.rows)
        self._merge_samples(topic, offset, batch.flagged)
        self.alerter.ingest(fresh, edges=self._merge_edges(topic, offset, batch.edges))
        self._note_source(batch, now)
        alerts = self.alerter.advance(self.watermark(now))
        self.state.put_progress(Progress({**progress.offsets, topic: offset}, self.alerter.evaluated_until))
        self.applied_messages += 1
        if self.applied_messages % 500 == 0:  # not by offset: transaction markers take offsets too
            self._expire()
        return alerts

    def watermark(self, now: float) -> float:
        """The slowest source's watermark, among ingest and scorer instances heard from in the last
        ``idle_source_s``; while an ingest worker leaves embeddings to a scorer, no window closes
        before a scorer has reported."""
        active = [s for s in self._sources.values() if now - s.seen <= self.idle_source_s]
        if any(s.remote for s in active) and not any(s.role == "scorer" for s in active):
            return float("-inf")
        marks = [s.watermark for s in active]
        if not marks or any(m is None for m in marks):
            return float("-inf")
        return min(m for m in marks if m is not None)

    def _merge_rows(self, topic: str, offset: int, rows: SliRows) -> SliRows:
        keep = np.zeros(len(rows), bool)
        for i, (bucket, model, client) in enumerate(zip(rows.bucket.tolist(), rows.model, rows.client, strict=True)):
            entry = self.state.bucket(model, client, bucket)
            if entry is not None and entry.reached(topic, offset):
                continue  # this message already reached this entry before a restart
            values, first = rows.values[i], rows.first[i]
            if entry is not None:
                values = values + entry.values
                first = np.minimum(first, entry.first)
            self.state.put_bucket(model, client, bucket, BucketEntry(stamped(entry, topic, offset), values, first))
            keep[i] = True
        return rows.take(keep)

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

    def _merge_samples(self, topic: str, offset: int, flagged: FlaggedEvents) -> None:
        if not len(flagged):
            return
        per_key, fresh = self.alerter.samples.per_key, []
        for model, client in dict.fromkeys(zip(flagged.model, flagged.client_id, strict=True)):
            entry = self.state.samples(model, client)
            if entry is not None and entry.reached(topic, offset):
                continue
            mine = (flagged.model == model) & (flagged.client_id == client)
            samples = (entry.samples if entry else []) + list(zip(flagged.event_id[mine], flagged.fingerprint[mine],
                                                                   strict=True))
            self.state.put_samples(model, client, SamplesEntry(stamped(entry, topic, offset), samples[-per_key:]))
            fresh.append(mine)
        if fresh:
            self.alerter.samples.add(flagged.take(np.logical_or.reduce(fresh)))

    def _note_source(self, batch: SliBatch, now: float) -> None:
        """A source's watermark only grows, so re-applying a message cannot move it back."""
        known = self._sources.get(batch.instance)
        previous = known.watermark if known is not None and known.watermark is not None else float("-inf")
        watermark = max(previous, batch.watermark)
        entry = SourceEntry(now, watermark if np.isfinite(watermark) else None, batch.role, batch.remote_scoring)
        self.state.put_source(batch.instance, entry)
        self._sources[batch.instance] = entry

    def _rebuild(self) -> Alerter:
        alerter = Alerter(self.rules, self.bucket_s, self.grace_s, self.baselines)
        stored = list(self.state.buckets())
        samples = [(i, model, client, f) for model, client, entry in self.state.all_samples() for i, f in entry.samples]
        if samples:
            ids, models, clients, fingerprints = zip(*samples, strict=True)
            alerter.samples.add(FlaggedEvents.of(ids, models, clients, [np.nan] * len(ids), [""] * len(ids),
                                                 fingerprints))
        until = self.state.progress.evaluated_until
        if stored:
            buckets = np.array([b for _, _, b, _ in stored], np.int64)
            order = np.argsort(buckets, kind="stable")
            rows = SliRows(buckets[order], np.array([m for m, _, _, _ in stored], object)[order],
                           np.array([c for _, c, _, _ in stored], object)[order],
                           np.array([e.values for _, _, _, e in stored], np.float64)[order],
                           np.array([e.first for _, _, _, e in stored], np.float64).reshape(
                               len(stored), len(BAD_COUNTERS))[order])
            replayed = self._replay(alerter, rows, until, self._stored_edges())
            log.info("alerter state rebuilt: %d bucket rows, evaluated through bucket %s, %d alerts open "
                     "(%d transitions replayed, not re-sent)", len(stored), until, len(alerter.firing), replayed)
        return alerter

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
            bucket = int(rows.bucket[start])
            alerter.ingest(rows.take(np.arange(start, end)), edges=edges.take(edges.bucket == bucket))
        if until is not None:
            transitions += len(alerter.evaluate_until(until))
        alerter.take_closed_totals()  # exported before the restart; counters must not count them again
        alerter.take_closed_rows()
        return transitions

    def _expire(self) -> None:
        """Drop buckets older than the longest window (plus grace): memory stays bounded."""
        until = self.alerter.evaluated_until
        if until is not None:
            self.state.expire_buckets(int((until - self.retention_s // self.bucket_s) * self.bucket_s))
