"""Every Prometheus metric advmon exports, declared once, with bounded label values.

Label values that come from traffic (model names, client ids) pass through :class:`LabelCap`:
the first ``limit`` distinct values keep their name, later ones become ``"other"``; client ids
are never used raw, only as a short keyed hash.

>>> m = Metrics()
>>> m.events.labels(model="digits").inc(3)
>>> m.registry.get_sample_value("advmon_events_total", {"model": "digits"})
3.0
>>> cap = LabelCap(limit=1); cap("a"), cap("b"), cap("a")
('a', 'other', 'a')
"""

from __future__ import annotations

import hashlib
import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.contracts.sli import ENTROPY_BINS
from monitor.telemetry.histograms import BatchHistogram

#: Per-client entropy is exported only for client-buckets with at least this many production queries.
MIN_CLIENT_QUERIES = 10


class LabelCap:
    """Bounded label values: the first ``limit`` distinct ones, then ``other``."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(value)
        return value


def hashed_client(client_id: str, salt: bytes = b"advmon-metrics") -> str:
    """A short keyed hash of a client id for labels (raw ids never reach Prometheus)."""
    return hashlib.blake2b(client_id.encode(), key=salt, digest_size=6).hexdigest()


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, model_limit: int = 50, client_limit: int = 20
    ) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.model_label = LabelCap(model_limit)
        self.client_label = LabelCap(client_limit)
        self.events = Counter("advmon_events_total", "Valid inference events processed", ["model"], registry=r)
        self.dead_letters = Counter(
            "advmon_dead_letters_total", "Records rejected to the dead-letter output", ["reason"], registry=r
        )
        self.collected = Counter("advmon_collected_records_total", "Records `advmon collect` received, by endpoint "
                                 "(events, kserve) and outcome (accepted, rejected)", ["source", "outcome"], registry=r)
        self.collect_pending = Gauge("advmon_collect_pending_calls", "KServe calls waiting for their other half",
                                     registry=r)
        self.late_events = Counter(
            "advmon_late_events_total", "Events older than the watermark minus grace", registry=r
        )
        self.caught_up = Counter(
            "advmon_alerter_caught_up_messages_total", "Messages the alerter read from the broker beside faust's "
            "consumer (offsets faust handed over past, or dropped after a rebalance)", ["topic"], registry=r)
        self.suspicious = Counter("advmon_suspicious_events_total", "Events flagged by a detector",
                                  ["model", "reason"], registry=r)
        self.duplicates = Counter("advmon_duplicate_queries_total", "Exact repeats of earlier raw inputs",
                                  ["model"], registry=r)
        self.batch_seconds = Histogram("advmon_batch_seconds", "Processing time of one batch", ["stage"],
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.watermark = Gauge("advmon_watermark_seconds", "Event-time watermark (epoch seconds)", registry=r)
        self.alerts = Counter("advmon_alerts_total", "Alert transitions", ["slo", "severity", "status"], registry=r)
        self.alerts_firing = Gauge("advmon_alerts_firing", "Alerts currently firing", ["slo", "severity"], registry=r)
        self.time_to_detect = Histogram(
            "advmon_time_to_detect_seconds",
            "First offending event to alert, event time",
            ["severity"],
            buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
            registry=r,
        )
        self.burn_rate = Gauge("advmon_burn_rate", "Error-budget burn rate of model-scoped SLOs",
                               ["slo", "model", "window"], registry=r)
        self.top_client_burn_rate = Gauge(
            "advmon_client_burn_rate",
            "Burn rate of the most suspicious clients (hashed)",
            ["slo", "client_hash", "window"],
            registry=r,
        )
        self.drift_statistic = Gauge("advmon_drift_statistic", "Drift detector state beside its decision",
                                     ["rule", "model", "stat"], registry=r)
        self.fingerprint_memory = Gauge(
            "advmon_fingerprint_index_bytes", "Memory of the fingerprint indexes", registry=r
        )
        self.fingerprint_lookback = Gauge(
            "advmon_fingerprint_lookback_seconds", "Event time the fingerprint index reaches back: a query is matched "
            "with none of the earlier ones it resembles that came longer ago (+Inf: nothing forgotten yet, or no index "
            "in this process)", registry=r)
        self.fingerprint_lookback.set(math.inf)
        self.consumer_lag = Gauge("advmon_consumer_lag_records", "Records behind the partition's high-water mark",
                                  ["topic", "partition"], registry=r)
        self.produced = Counter("advmon_produced_records_total", "Records written to output topics", ["topic"],
                                registry=r)
        self.transactions = Counter("advmon_ingest_transactions_total", "Ingest output transactions by outcome",
                                    ["outcome"], registry=r)
        self.scored = Counter("advmon_scorer_embeddings_total", "Embeddings the scorer worker handled",
                              ["outcome"], registry=r)
        self.margin_counts = Counter("advmon_margin_counts_messages_total", "Other ingest workers' margin-counts "
                                     "messages an ingest worker read, by outcome (added, refused)", ["outcome"],
                                     registry=r)
        self.sli_bad = Counter("advmon_sli_bad_events_total", "Bad events of each SLI per model, per closed bucket",
                               ["sli", "model"], registry=r)
        self.sli_events = Counter("advmon_sli_events_total", "Eligible events of each SLI per model, per closed bucket",
                                  ["sli", "model"], registry=r)
        self.confidence = BatchHistogram("advmon_prediction_confidence", "Confidence of predictions", ["model"],
                                         buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99), registry=r)
        self.score_ratio = BatchHistogram("advmon_anomaly_score_ratio", "Largest anomaly score over its threshold "
                                          "(above 1: flagged)", ["model"],
                                          buckets=(0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 4.0, 8.0), registry=r)
        self.client_query_entropy = BatchHistogram(
            "advmon_client_query_entropy_bits", f"Entropy of each client's predicted labels or coarse input "
            f"fingerprints per closed bucket ({ENTROPY_BINS} bins; clients with at least {MIN_CLIENT_QUERIES} "
            "queries)", ["model", "kind"], buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 2.75), registry=r)
        self.client_query_rate = BatchHistogram(
            "advmon_client_query_rate", "Queries per second of each client per closed bucket", ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 50, 100, 1000), registry=r)
        self.rebalance_seconds = Gauge(
            "advmon_alerter_rebalance_seconds", "How long the alerter's current consumer-group rebalance has lasted, "
            "table recovery included (0: none)", registry=r)
        self.outbox_pending = Gauge("advmon_outbox_pending", "Notification deliveries waiting for (re)try", registry=r)
        self.deliveries = Counter("advmon_sink_deliveries_total", "Notification deliveries", ["receiver", "outcome"],
                                  registry=r)

    def model(self, name: str) -> str:
        return self.model_label(name)
