"""The alerter's state kept in a key-value store (a faust table with a changelog in production), so
a restarted alerter resumes its windows and open alerts instead of starting blind.

What is stored is the input, merged: one entry per (model, client, bucket) with its summed
counters, one per ingest instance with its watermark, the alert evidence, and the evaluation
progress. The in-memory :class:`~monitor.alerter.Alerter` is a cache rebuilt from the store on
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
>>> from monitor.rules import load_rules_text
>>> from monitor.sli import SliRows
>>> from monitor.wire import SliBatch
>>> rules = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, min_events: 5, severities: [page]}]")
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
from collections.abc import MutableMapping

import numpy as np

from monitor.alerter import Alerter
from monitor.alerts import Alert
from monitor.rules import Rules
from monitor.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows
from monitor.wire import SliBatch

log = logging.getLogger("advmon.durable")
SEP = "\x1f"
PROGRESS = "progress"


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values.tolist()]


def _reached(entry: dict | None, topic: str, offset: int) -> bool:
    """Whether the message at ``offset`` of ``topic`` already changed this entry."""
    return entry is not None and entry["o"].get(topic, -1) >= offset


def _stamped(entry: dict | None, topic: str, offset: int) -> dict[str, int]:
    return {**(entry["o"] if entry else {}), topic: offset}


def _finite_or_inf(values: list[float | None]) -> list[float]:
    return [np.inf if v is None else v for v in values]


class DurableAlerter:
    def __init__(self, rules: Rules, store: MutableMapping, bucket_s: int = 60, grace_s: float = 60.0,
                 idle_source_s: float = 120.0, retention_s: float | None = None) -> None:
        self.rules = rules
        self.store = store
        self.bucket_s = bucket_s
        self.grace_s = grace_s
        self.idle_source_s = idle_source_s
        horizon = max([slo.horizon_s for slo in rules.slos] + [24 * 3600])
        self.retention_s = retention_s or horizon + 2 * bucket_s + grace_s
        self._sources: dict[str, dict] = {}  # the store's source entries, kept at hand: read on every message
        self.alerter = self._rebuild()
        self.skipped_messages = 0
        self.applied_messages = 0

    @property
    def firing(self) -> list[Alert]:
        return self.alerter.firing

    @property
    def progress(self) -> dict:
        return self.store.get(PROGRESS) or {"offsets": {}, "evaluated_until": None}

    def apply(self, offset: int, batch: SliBatch, now: float, topic: str = "sli-buckets") -> list[Alert]:
        """Apply one message at ``offset`` of an input ``topic`` (``sli-buckets`` from ingest, ``scores``
        from the scorer); returns the alerts its watermark released."""
        progress = self.progress
        if offset <= progress["offsets"].get(topic, -1):
            self.skipped_messages += 1
            return []
        fresh = self._merge_rows(topic, offset, batch.rows)
        self._merge_evidence(topic, offset, batch)
        self.alerter.ingest(fresh)
        self._note_source(batch, now)
        alerts = self.alerter.advance(self.watermark(now))
        self.store[PROGRESS] = {"offsets": {**progress["offsets"], topic: offset},
                                "evaluated_until": self.alerter.evaluated_until}
        self.applied_messages += 1
        if self.applied_messages % 500 == 0:  # not by offset: transaction markers take offsets too
            self._expire()
        return alerts

    def watermark(self, now: float) -> float:
        """The slowest source's watermark, among ingest and scorer instances heard from in the last
        ``idle_source_s``; while an ingest worker leaves embeddings to a scorer, no window closes
        before a scorer has reported."""
        active = [v for v in self._sources.values() if now - v["seen"] <= self.idle_source_s]
        if any(s.get("remote") for s in active) and not any(s.get("role") == "scorer" for s in active):
            return float("-inf")
        marks = [s["watermark"] for s in active]
        return float("-inf") if not marks or None in marks else min(marks)

    def _merge_rows(self, topic: str, offset: int, rows: SliRows) -> SliRows:
        keep = np.zeros(len(rows), bool)
        for i, (bucket, model, client) in enumerate(zip(rows.bucket.tolist(), rows.model, rows.client)):
            key = SEP.join(("b", model, client, str(bucket)))
            entry = self.store.get(key)
            if _reached(entry, topic, offset):
                continue  # this message already reached this entry before a restart
            values, first = rows.values[i], rows.first[i]
            if entry is not None:
                values = values + _full_width(entry["v"])
                first = np.minimum(first, _finite_or_inf(entry["f"]))
            self.store[key] = {"o": _stamped(entry, topic, offset), "v": values.tolist(),
                               "f": _nullable(np.asarray(first))}
            keep[i] = True
        return rows.take(keep)

    def _merge_evidence(self, topic: str, offset: int, batch: SliBatch) -> None:
        e, per_key = batch.evidence, self.alerter.evidence.per_key
        if not len(e.event_id):
            return
        fresh = []
        for model, client in dict.fromkeys(zip(e.model, e.client_id)):
            key = SEP.join(("e", model, client))
            entry = self.store.get(key)
            if _reached(entry, topic, offset):
                continue
            mine = (e.model == model) & (e.client_id == client)
            samples = (entry["samples"] if entry else []) + [[i, f] for i, f in zip(e.event_id[mine], e.fingerprint[mine])]
            self.store[key] = {"o": _stamped(entry, topic, offset), "samples": samples[-per_key:]}
            fresh.append(mine)
        if fresh:
            m = np.logical_or.reduce(fresh)
            self.alerter.evidence.add(e.event_id[m], e.model[m], e.client_id[m], e.fingerprint[m])

    def _note_source(self, batch: SliBatch, now: float) -> None:
        """A source's watermark only grows, so re-applying a message cannot move it back."""
        key = "s" + SEP + batch.instance
        entry = self._sources.get(key) or {"watermark": None}
        previous = entry["watermark"] if entry["watermark"] is not None else float("-inf")
        watermark = max(previous, batch.watermark)
        self.store[key] = self._sources[key] = {
            "seen": now, "watermark": watermark if np.isfinite(watermark) else None, "role": batch.role,
            "remote": batch.remote_scoring}

    def _rebuild(self) -> Alerter:
        alerter = Alerter(self.rules, self.bucket_s, self.grace_s)
        buckets, models, clients, values, firsts = [], [], [], [], []
        samples = []
        for key, entry in list(self.store.items()):
            kind, *parts = key.split(SEP)
            if kind == "b":
                models.append(parts[0]); clients.append(parts[1]); buckets.append(int(parts[2]))
                values.append(_full_width(entry["v"])); firsts.append(_finite_or_inf(entry["f"]))
            elif kind == "s":
                self._sources[key] = entry
            elif kind == "e":
                samples += [(i, parts[0], parts[1], f) for i, f in entry["samples"]]
        if samples:
            alerter.evidence.add(*(np.asarray(c, object) for c in zip(*samples)))
        until = self.progress["evaluated_until"]
        if buckets:
            order = np.argsort(buckets, kind="stable")
            rows = SliRows(np.asarray(buckets, np.int64)[order], np.asarray(models, object)[order],
                           np.asarray(clients, object)[order], np.asarray(values, np.float64)[order],
                           np.asarray(firsts, np.float64).reshape(len(buckets), len(BAD_COUNTERS))[order])
            replayed = self._replay(alerter, rows, until)
            log.info("alerter state rebuilt: %d bucket rows, evaluated through bucket %s, %d alerts open "
                     "(%d transitions replayed, not re-sent)", len(buckets), until, len(alerter.firing), replayed)
        return alerter

    def _replay(self, alerter: Alerter, rows: SliRows, until: int | None) -> int:
        """Feed stored rows bucket by bucket, evaluating as the live watermark did (``grace`` behind)."""
        index = rows.bucket // self.bucket_s
        lag = 1 + int(np.ceil(self.grace_s / self.bucket_s))
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        transitions = 0
        for start, end in zip(starts, np.r_[starts[1:], len(index)]):
            if until is not None and alerter.evaluated_until is not None:
                transitions += len(alerter.evaluate_until(min(int(index[start]) - lag, until)))
            alerter.ingest(rows.take(slice(start, end)))
        if until is not None:
            transitions += len(alerter.evaluate_until(until))
        alerter.take_closed_totals()  # exported before the restart; counters must not count them again
        alerter.take_closed_rows()
        return transitions

    def _expire(self) -> None:
        """Drop buckets older than the longest window (plus grace): memory stays bounded."""
        until = self.alerter.evaluated_until
        if until is None:
            return
        oldest = (until - self.retention_s // self.bucket_s) * self.bucket_s
        stale = [k for k in list(self.store.keys()) if k.startswith("b" + SEP) and int(k.rsplit(SEP, 1)[1]) < oldest]
        for key in stale:
            del self.store[key]


def _full_width(stored: list[float]) -> np.ndarray:
    """Stored values as a full row: entries written before columns were appended get zeros for them."""
    values = np.zeros(len(VALUE_COLUMNS))
    values[:len(stored)] = stored
    return values
