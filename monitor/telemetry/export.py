"""What each runtime exports to Prometheus: one engine batch's counts and distributions, alert
transitions, and the evaluator's state per closed bucket (shared by the in-process runtime and the daemons).

>>> from monitor.alerting.alerter import Alerter
>>> from monitor.spec.rules import load_rules_text
>>> m = Metrics()
>>> export_alert_state(m, Alerter(load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99}]")))
>>> m.registry.get_sample_value("advmon_alerts_firing", {"slo": "a", "severity": "page"})
0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitor.alerting.alerter import Alerter
from monitor.alerting.slo import SloEvaluator
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SLI_DEFINITIONS, SliRows, series_values, summed_by, value_index
from monitor.detect.batch import EventBatch
from monitor.detect.engine import BatchResult
from monitor.telemetry.metrics import MIN_CLIENT_QUERIES, Metrics, hashed_client


def observe_batch(m: Metrics, result: BatchResult, batch: EventBatch, late_events: int | None = None) -> None:
    """Export one engine batch's counts and distributions (shared by the in-process runtime and ingest).
    ``late_events`` overrides the engine's count (ingest measures lateness against its per-partition
    watermark; the engine only knows the largest event time it has seen)."""
    rows, flagged = result.rows, result.flagged
    names, codes = batch.model_codes
    for code, model in enumerate(names):
        mine = codes == code
        m.confidence.observe_many((m.model(model),), batch.confidence[mine])
        if len(result.score_ratio):
            m.score_ratio.observe_many((m.model(model),), result.score_ratio[mine])
    m.late_events.inc(result.late_events if late_events is None else late_events)
    if len(rows):  # one increment per model and batch, not per row (thousands of rows over a few models)
        first, sums = summed_by(np.column_stack([rows.column("events"), rows.column("duplicates")]), rows.model)
        for model, (events, dups) in zip(rows.model[first].tolist(), sums.tolist(), strict=True):
            m.events.labels(model=m.model(model)).inc(events)
            if dups:
                m.duplicates.labels(model=m.model(model)).inc(dups)
    if len(flagged):
        first, counts = summed_by(np.ones((len(flagged), 1)), flagged.model, flagged.reason)
        for model, reason, (count,) in zip(flagged.model[first].tolist(), flagged.reason[first].tolist(),
                                            counts.tolist(), strict=True):
            m.suspicious.labels(model=m.model(model), reason=reason).inc(count)
    if result.watermark > float("-inf"):
        m.watermark.set(result.watermark)


def observe_index(m: Metrics, memory_bytes: int, lookback_s: float) -> None:
    """Export the query index's memory and look-back (an engine's own matcher, the matcher's, a shard's).

    >>> m = Metrics(); observe_index(m, 512, 90.0); m.registry.get_sample_value("advmon_fingerprint_lookback_seconds")
    90.0
    """
    m.fingerprint_memory.set(memory_bytes)
    m.fingerprint_lookback.set(lookback_s)


def count_alerts(m: Metrics, alerts: Sequence[Alert]) -> None:
    for alert in alerts:
        m.alerts.labels(slo=alert.slo, severity=alert.severity, status=alert.status).inc()
        if alert.status == "firing" and alert.time_to_detect_s is not None:
            m.time_to_detect.labels(severity=alert.severity).observe(alert.time_to_detect_s)


def export_alert_state(m: Metrics, alerter: Alerter, firing: Sequence[Alert] | None = None) -> None:
    """Gauges of the evaluator: alerts firing, burn rates (models; top clients hashed), drift statistics;
    and the SLI counters of closed buckets (what ``advmon rules render``'s Prometheus rules read).
    ``firing``: what the process has open where it runs several alerters (a sharded alerter's partitions)."""
    for model, values in alerter.take_closed_totals():
        for sli, (bad, total) in SLI_DEFINITIONS.items():
            label = m.model(model)
            m.sli_bad.labels(sli=sli, model=label).inc(max(0.0, values[value_index(bad)]))
            m.sli_events.labels(sli=sli, model=label).inc(max(0.0, values[value_index(total)]))
    _export_client_queries(m, alerter.take_closed_rows(), alerter.bucket_s)
    counts: dict[tuple[str, str], int] = {}
    for alert in alerter.firing if firing is None else firing:
        counts[(alert.slo, alert.severity)] = counts.get((alert.slo, alert.severity), 0) + 1
    for evaluator in alerter.slos:
        for severity in evaluator.severities:
            m.alerts_firing.labels(slo=evaluator.slo.name, severity=severity).set(
                counts.get((evaluator.slo.name, severity), 0))
        for window, burn in evaluator.last_burn.items():
            _export_burn(m, evaluator, window, burn)
    for drift in alerter.drifts:
        for model, stats in drift.statistics.items():
            for stat, value in stats.items():
                m.drift_statistic.labels(rule=drift.rule.name, model=m.model(model), stat=stat).set(value)


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


def _export_burn(m: Metrics, evaluator: SloEvaluator, window: str, burn: np.ndarray) -> None:
    keys = evaluator.windows.keys[:len(burn)]  # burn rates of the last evaluation; keys added since have none
    if evaluator.slo.scope == "model":
        for key, value in zip(keys, burn, strict=True):
            if key is None:  # a released row
                continue
            model = key[0]
            m.burn_rate.labels(slo=evaluator.slo.name, model=m.model(model), window=window).set(value)
        return
    for row in burn.argsort()[::-1][:5]:  # top-5 clients, hashed, through a capped label set
        key = keys[row]
        if burn[row] > 0 and key is not None and key[1] is not None:
            label = m.client_label(hashed_client(key[1]))
            m.top_client_burn_rate.labels(slo=evaluator.slo.name, client_hash=label, window=window).set(burn[row])
