"""The in-process runtime: raw records -> parse -> engine -> alerter -> pipeline -> sinks, no services.

The Kafka daemons compose the same pieces around topics; this adapter composes them around
function calls. It owns the I/O-facing concerns: metrics, dead-letter output, sink delivery.

>>> from monitor.config import Settings
>>> from monitor.rules import load_rules_text
>>> rt = InProcessRuntime.build(Settings(), load_rules_text("slos: []"), sinks=[])
>>> stats = rt.feed([b'{"event_id": "a", "ts": 60, "client_id": "c", "prediction": {"label": "1", "confidence": 1}}', b"nope"])
>>> stats.events, stats.dead
(1, 1)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from monitor.alerter import Alerter
from monitor.alerts import Alert
from monitor.config import Settings
from monitor.deadletter import DeadLetter
from monitor.batch import EventBatch
from monitor.engine import BatchResult, Engine
from monitor.metrics import MIN_CLIENT_QUERIES, Metrics, hashed_client
from monitor.parsing import parse_batch
from monitor.pipeline import Notification, Pipeline
from monitor.rules import Rules
from monitor.scoring import Profile
from monitor.sinks import Sink
from monitor.sli import SLI_DEFINITIONS, SliRows, series_values, value_index

log = logging.getLogger("advmon.runtime")


@dataclass
class RunStats:
    events: int = 0
    dead: int = 0
    late: int = 0
    suspicious: int = 0
    alerts: list[Alert] = field(default_factory=list)


def observe_batch(m: Metrics, result: BatchResult, fingerprint_memory_bytes: int, batch: EventBatch,
                  late_events: int | None = None) -> None:
    """Export one engine batch's counts and distributions (shared by the in-process runtime and ingest).
    ``late_events`` overrides the engine's count (ingest measures lateness against its per-partition
    watermark; the engine only knows the largest event time it has seen)."""
    rows = result.rows
    for model in np.unique(batch.model):
        mine = batch.model == model
        m.confidence.observe_many((m.model(model),), batch.confidence[mine])
        if len(result.score_ratio):
            m.score_ratio.observe_many((m.model(model),), result.score_ratio[mine])
    m.late_events.inc(result.late_events if late_events is None else late_events)
    for model, events, dups in zip(rows.model, rows.column("events"), rows.column("duplicates")):
        m.events.labels(model=m.model(model)).inc(events)
        if dups:
            m.duplicates.labels(model=m.model(model)).inc(dups)
    for model, reason in zip(result.suspicious.model, result.suspicious.reason):
        m.suspicious.labels(model=m.model(model), reason=reason).inc()
    if result.watermark > float("-inf"):
        m.watermark.set(result.watermark)
    m.fingerprint_memory.set(fingerprint_memory_bytes)


def count_alerts(m: Metrics, alerts: Sequence[Alert]) -> None:
    for alert in alerts:
        m.alerts.labels(slo=alert.slo, severity=alert.severity, status=alert.status).inc()
        if alert.status == "firing" and alert.time_to_detect_s is not None:
            m.time_to_detect.labels(severity=alert.severity).observe(alert.time_to_detect_s)


def export_alert_state(m: Metrics, alerter: Alerter) -> None:
    """Gauges of the evaluator: alerts firing, burn rates (models; top clients hashed), drift statistics;
    and the SLI counters of closed buckets (what ``advmon rules render``'s Prometheus rules read)."""
    for model, values in alerter.take_closed_totals():
        for sli, (bad, total) in SLI_DEFINITIONS.items():
            label = m.model(model)
            m.sli_bad.labels(sli=sli, model=label).inc(max(0.0, values[value_index(bad)]))
            m.sli_events.labels(sli=sli, model=label).inc(max(0.0, values[value_index(total)]))
    _export_client_queries(m, alerter.take_closed_rows(), alerter.bucket_s)
    counts: dict[tuple[str, str], int] = {}
    for alert in alerter.firing:
        counts[(alert.slo, alert.severity)] = counts.get((alert.slo, alert.severity), 0) + 1
    for evaluator in alerter.slos:
        for severity in evaluator.severities:
            m.alerts_firing.labels(slo=evaluator.slo.name, severity=severity).set(
                counts.get((evaluator.slo.name, severity), 0))
        for window, burn in evaluator.last_burn.items():
            _export_burn(m, evaluator, window, burn)
    for evaluator in alerter.drifts:
        for model, stats in evaluator.statistics.items():
            for stat, value in stats.items():
                m.drift_statistic.labels(rule=evaluator.rule.name, model=m.model(model), stat=stat).set(value)


def _export_client_queries(m: Metrics, rows: SliRows, bucket_s: int) -> None:
    """Distributions over clients, per model: query rate, and label / input entropy of busy clients."""
    if not len(rows):
        return
    for model in np.unique(rows.model.astype(str)).tolist():
        mine = rows.values[rows.model.astype(str) == model]
        label = m.model(model)
        rate, queries = series_values("query_rate", mine, bucket_s)
        m.client_query_rate.observe_many((label,), rate[queries > 0])
        for kind in ("label", "input"):
            entropy, counted = series_values(f"{kind}_entropy", mine, bucket_s)
            m.client_query_entropy.observe_many((label, kind), entropy[counted >= MIN_CLIENT_QUERIES])


def _export_burn(m: Metrics, evaluator, window: str, burn) -> None:
    keys = evaluator.windows.keys
    if evaluator.slo.scope == "model":
        for key, value in zip(keys, burn):
            if key is None:  # a released row
                continue
            model = key[0]
            m.burn_rate.labels(slo=evaluator.slo.name, model=m.model(model), window=window).set(value)
        return
    for row in burn.argsort()[::-1][:5]:  # top-5 clients, hashed, through a capped label set
        if burn[row] > 0 and keys[row] is not None:
            label = m.client_label(hashed_client(keys[row][1]))
            m.top_client_burn_rate.labels(slo=evaluator.slo.name, client_hash=label, window=window).set(burn[row])


def deliver(sinks: dict[str, Sink], metrics: Metrics, notification: Notification) -> None:
    """Hand a notification to its receiver's sink; a failing sink is logged and counted, never fatal."""
    sink = sinks.get(notification.receiver)
    if sink is None:
        log.error("route names receiver %r, which is not configured; alerts: %s", notification.receiver,
                  [a.dedup_key for a in notification.alerts])
        metrics.deliveries.labels(receiver="unknown", outcome="no_receiver").inc()
        return
    try:
        sink.send(notification)
    except Exception:  # a sink failure must not stop detection
        log.exception("delivery to %s failed", notification.receiver)
        metrics.deliveries.labels(receiver=notification.receiver, outcome="failed").inc()
    else:
        metrics.deliveries.labels(receiver=notification.receiver, outcome="sent").inc()


@dataclass
class InProcessRuntime:
    engine: Engine
    alerter: Alerter
    pipeline: Pipeline
    sinks: dict[str, Sink]
    metrics: Metrics
    max_record_bytes: int
    on_dead: Callable[[list[DeadLetter]], None] = lambda dead: None
    on_alerts: Callable[[list[Alert]], None] = lambda alerts: None
    on_batch: Callable[[BatchResult], None] = lambda result: None
    stats: RunStats = field(default_factory=RunStats)

    @classmethod
    def build(cls, settings: Settings, rules: Rules, sinks: Sequence[Sink], profile: Profile | None = None,
              metrics: Metrics | None = None, **callbacks) -> InProcessRuntime:
        engine_settings = settings.engine_settings()
        return cls(
            engine=Engine(engine_settings, profile),
            alerter=Alerter(rules, engine_settings.bucket_s, engine_settings.grace_s),
            pipeline=Pipeline(rules.routes, (*rules.silences, *rules.maintenance)),
            sinks={s.name: s for s in sinks},
            metrics=metrics or Metrics(),
            max_record_bytes=settings.max_record_bytes,
            **callbacks,
        )

    def feed(self, records: Sequence[bytes], sources: Sequence[str] | None = None) -> RunStats:
        """Process one batch of raw records; evaluates rules for every bucket the watermark closed."""
        started = time.perf_counter()
        parsed = parse_batch(records, sources, self.max_record_bytes)
        parsed_at = time.perf_counter()
        result = self.engine.process(parsed.batch)
        self.alerter.ingest(result.rows, result.suspicious)
        engine_at = time.perf_counter()
        self._dead(parsed.dead)
        self._observe(result, parsed.batch)
        self.on_batch(result)
        self._emit(self.alerter.advance(result.watermark), now=result.watermark)
        m = self.metrics.batch_seconds
        m.labels(stage="parse").observe(parsed_at - started)
        m.labels(stage="engine").observe(engine_at - parsed_at)
        m.labels(stage="alert").observe(time.perf_counter() - engine_at)
        return self.stats

    def finish(self) -> list[Alert]:
        """End of input: evaluate through the last bucket that holds events (replay's final step)."""
        watermark = self.engine.watermark
        if watermark == float("-inf"):
            return []
        end_bucket = int(watermark // self.alerter.bucket_s) + 1
        alerts = self.alerter.evaluate_until(end_bucket)
        self._emit(alerts, now=float(end_bucket * self.alerter.bucket_s))
        return alerts

    def _dead(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        self.stats.dead += len(dead)
        for letter in dead:
            self.metrics.dead_letters.labels(reason=letter.category).inc()
        self.on_dead(dead)

    def _observe(self, result: BatchResult, batch: EventBatch) -> None:
        self.stats.events += int(result.rows.column("events").sum())
        self.stats.late += result.late_events
        self.stats.suspicious += len(result.suspicious)
        observe_batch(self.metrics, result, self.engine.fingerprint_memory_bytes, batch)

    def _emit(self, alerts: list[Alert], now: float) -> None:
        count_alerts(self.metrics, alerts)
        firing = self.alerter.firing
        export_alert_state(self.metrics, self.alerter)
        if alerts:
            self.stats.alerts.extend(alerts)
            self.on_alerts(alerts)
        for notification in self.pipeline.process([*alerts, *firing], now=now, firing=firing):
            self._deliver(notification)

    def _deliver(self, notification: Notification) -> None:
        deliver(self.sinks, self.metrics, notification)
