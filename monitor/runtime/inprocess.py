"""The in-process runtime: raw records -> parse -> engine -> alerter -> pipeline -> sinks, no services.

The Kafka daemons compose the same pieces around topics; this adapter composes them around
function calls. It owns the I/O-facing concerns: metrics, dead-letter output, sink delivery.

>>> from monitor.settings import Settings
>>> from monitor.spec.rules import load_rules_text
>>> rt = InProcessRuntime.build(Settings(), load_rules_text("slos: []"), sinks=[])
>>> good = b'{"event_id": "a", "ts": 60, "client_id": "c", "prediction": {"label": "1", "confidence": 1}}'
>>> stats = rt.feed([good, b"nope"])
>>> stats.events, stats.dead
(1, 1)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from monitor.alerting.alerter import Alerter
from monitor.contracts.alerts import Alert
from monitor.contracts.dead_letters import DeadLetter
from monitor.detect.batch import EventBatch
from monitor.detect.engine import BatchResult, Engine
from monitor.detect.parsing import parse_batch
from monitor.detect.profiles import Profile
from monitor.notify.delivery import deliver
from monitor.notify.pipeline import Notification, Pipeline
from monitor.notify.sinks import Sink
from monitor.settings import Settings
from monitor.spec.rules import Rules
from monitor.telemetry.export import count_alerts, export_alert_state, observe_batch, observe_index
from monitor.telemetry.metrics import Metrics

log = logging.getLogger("advmon.runtime")


@dataclass
class RunStats:
    events: int = 0
    dead: int = 0
    late: int = 0
    suspicious: int = 0
    alerts: list[Alert] = field(default_factory=list)


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
            alerter=Alerter(rules, engine_settings.bucket_s, engine_settings.grace_s,
                            profile.baselines if profile is not None else None),
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
        self.alerter.ingest(result.rows, result.flagged, result.edges)
        engine_at = time.perf_counter()
        self._dead(parsed.dead)
        self._observe(result, parsed.batch)
        self._emit(self.alerter.advance(result.watermark), now=result.watermark)
        m = self.metrics.batch_seconds
        m.labels(stage="parse").observe(parsed_at - started)
        m.labels(stage="engine").observe(engine_at - parsed_at)
        m.labels(stage="alert").observe(time.perf_counter() - engine_at)
        return self.stats

    def finish(self) -> list[Alert]:
        """End of input: evaluate through the last bucket that holds events (replay's final step)."""
        result = self.engine.finish()  # the queries of the buckets no watermark closed yet
        self.alerter.ingest(result.rows, result.flagged, result.edges)
        self._observe(result, EventBatch.from_records([])[0])
        watermark = self.engine.watermark
        if watermark == float("-inf"):
            return []
        end_bucket = int(watermark // self.alerter.bucket_s) + 1
        alerts = self.alerter.evaluate_until(end_bucket)
        now = float(end_bucket * self.alerter.bucket_s)
        self._emit(alerts, now=now)
        for notification in self.pipeline.flush(now, final=True):  # what still waited for its group
            self._deliver(notification)
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
        self.stats.suspicious += len(result.flagged)
        observe_batch(self.metrics, result, batch)
        observe_index(self.metrics, self.engine.fingerprint_memory_bytes, self.engine.fingerprint_lookback_s)
        self.on_batch(result)

    def _emit(self, alerts: list[Alert], now: float) -> None:
        count_alerts(self.metrics, alerts)
        firing = self.alerter.firing
        export_alert_state(self.metrics, self.alerter)
        if alerts:
            self.stats.alerts.extend(alerts)
            self.on_alerts(alerts)
        for notification in self.pipeline.process(alerts, now=now, firing=firing):
            self._deliver(notification)

    def _deliver(self, notification: Notification) -> None:
        deliver(self.sinks, self.metrics, notification)
