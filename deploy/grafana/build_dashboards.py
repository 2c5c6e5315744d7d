"""Grafana dashboards as code: ``python3 deploy/grafana/build_dashboards.py`` rewrites dashboards/*.json.

Three views: executive (fooling-rate trend, SLO compliance, incidents), on-call (what is burning
now, who, and is advmon healthy) and debug (distributions, drift statistics, flagged samples).
Every dashboard picks its Prometheus data source (``$datasource``) and filters by ``$job`` and ``$model``
(multi-value, all by default): each query's advmon metrics get ``job=~"$job"`` and, where the metric has a
``model`` label, ``model=~"$model"``. A test checks the committed JSON is this script's output and that
every query names a metric the code exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitor.telemetry.metrics import Metrics

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
_METRIC = re.compile(r"\b(advmon_[a-z_]+?)(_bucket|_total)?\b(\{([^}]*)\})?")


def _metrics_with_model() -> set[str]:
    metrics = vars(Metrics()).values()
    return {getattr(m, "_name", getattr(m, "name", "")) for m in metrics
            if "model" in (getattr(m, "_labelnames", None) or getattr(m, "labelnames", None) or ())}


WITH_MODEL = _metrics_with_model()


def filtered(expr: str) -> str:
    """``expr`` with every advmon metric selector narrowed to the dashboard's ``$job`` and ``$model``."""
    def narrow(match: re.Match) -> str:
        name, suffix, matchers = match.group(1), match.group(2) or "", match.group(4)
        extra = ['job=~"$job"'] + (['model=~"$model"'] if name in WITH_MODEL or name + suffix in WITH_MODEL else [])
        return f"{name}{suffix}{{{', '.join(([matchers] if matchers else []) + extra)}}}"
    return _METRIC.sub(narrow, expr)


def panel(title, exprs, x, y, w=12, h=8, kind="timeseries", unit=None, description=""):
    heatmap = kind == "heatmap"
    targets = []
    for i, (expr, legend) in enumerate(exprs):
        target = {"refId": chr(65 + i), "expr": filtered(expr), "legendFormat": "{{le}}" if heatmap else legend}
        if heatmap:
            target["format"] = "heatmap"
        targets.append(target)
    p = {"type": kind, "title": title, "description": description, "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "datasource": DS, "targets": targets}
    if heatmap:
        p["options"] = {"calculate": False, "yAxis": {"unit": unit or "short"}}
    if unit:
        p["fieldConfig"] = {"defaults": {"unit": unit}, "overrides": []}
    return p


def _variables() -> list[dict]:
    datasource = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}

    def label_values(name, label):
        return {"name": name, "label": label.capitalize(), "type": "query", "datasource": DS,
                "query": {"query": f"label_values(advmon_events_total, {label})", "refId": name},
                "definition": f"label_values(advmon_events_total, {label})", "multi": True, "includeAll": True,
                "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1,
                "hide": 0, "options": []}

    return [datasource, label_values("job", "job"), label_values("model", "model")]


def dashboard(uid, title, panels):
    for number, p in enumerate(panels, start=1):
        p["id"] = number
    return {"uid": uid, "title": title, "tags": ["advmon"], "timezone": "utc", "schemaVersion": 39,
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "panels": panels,
            "templating": {"list": _variables()}, "annotations": {"list": []}}


def ratio(sli, window, by="model"):
    return (f'sum by ({by}) (increase(advmon_sli_bad_events_total{{sli="{sli}"}}[{window}]))'
            f' / sum by ({by}) (increase(advmon_sli_events_total{{sli="{sli}"}}[{window}]))')


def executive():
    return dashboard("advmon-executive", "advmon / executive", [
        panel("Fooling rate of red-team canaries (1d)", [(ratio("fooling_rate", "1d"), "{{model}}")], 0, 0, 12, 8,
              unit="percentunit", description="Share of adversarial canaries that changed the model's answer."),
        panel("Detector miss rate on canaries (1d)", [(ratio("detector_miss_rate", "1d"), "{{model}}")], 12, 0, 12, 8,
              unit="percentunit"),
        panel("Input anomaly rate, 30 days", [(ratio("input_anomaly_rate", "30d"), "{{model}}")], 0, 8, 8, 6, "stat",
              unit="percentunit"),
        panel("Near-duplicate query rate, 30 days", [(ratio("near_duplicate_query_rate", "30d"), "{{model}}")],
              8, 8, 8, 6, "stat", unit="percentunit"),
        panel("Error rate on labelled traffic, 30 days", [(ratio("error_rate", "30d"), "{{model}}")], 16, 8, 8, 6,
              "stat", unit="percentunit"),
        panel("Incidents per day by SLO and severity",
              [('sum by (slo, severity) (increase(advmon_alerts_total{status="firing"}[1d]))', "{{slo}} {{severity}}")],
              0, 14, 12, 8, "barchart"),
        panel("Time to detect, p50 and p90 (7 days)",
              [("histogram_quantile(0.5, sum by (le) (increase(advmon_time_to_detect_seconds_bucket[7d])))", "p50"),
               ("histogram_quantile(0.9, sum by (le) (increase(advmon_time_to_detect_seconds_bucket[7d])))", "p90")],
              12, 14, 12, 8, "stat", unit="s"),
    ])


def oncall():
    return dashboard(
        "advmon-oncall",
        "advmon / on-call",
        [
            panel(
                "Alerts firing",
                [("sum by (slo, severity) (advmon_alerts_firing)", "{{slo}} {{severity}}")],
                0,
                0,
                8,
                6,
                "stat",
            ),
            panel(
                "Events/s by model",
                [("sum by (model) (rate(advmon_events_total[5m]))", "{{model}}")],
                8,
                0,
                16,
                6,
                unit="ops",
            ),
            panel(
                "Burn rate per model SLO",
                [("max by (slo, model, window) (advmon_burn_rate)", "{{slo}} {{model}} {{window}}")],
                0,
                6,
            ),
            panel(
                "Most suspicious clients (hashed) burn rate",
                [("topk(10, max by (slo, client_hash) (advmon_client_burn_rate))", "{{slo}} {{client_hash}}")],
                12,
                6,
            ),
            panel(
                "Suspicious events/s",
                [("sum by (model, reason) (rate(advmon_suspicious_events_total[5m]))", "{{model}} {{reason}}")],
                0,
                14,
                unit="ops",
            ),
            panel(
                "Dead letters/s by reason",
                [("sum by (reason) (rate(advmon_dead_letters_total[5m]))", "{{reason}}")],
                12,
                14,
                unit="ops",
            ),
            panel("Consumer lag (records)", [("sum by (topic) (advmon_consumer_lag_records)", "{{topic}}")], 0, 22),
            panel(
                "Batch latency p99 by stage",
                [("histogram_quantile(0.99, sum by (le, stage) (rate(advmon_batch_seconds_bucket[5m])))", "{{stage}}")],
                12,
                22,
                unit="s",
            ),
            panel(
                "Notification deliveries",
                [("sum by (receiver, outcome) (rate(advmon_sink_deliveries_total[5m]))", "{{receiver}} {{outcome}}")],
                0,
                30,
                unit="ops",
            ),
            panel("Outbox: deliveries waiting", [("advmon_outbox_pending", "pending")], 12, 30),
            panel(
                "Clean accuracy: last hour vs. the 7 days before",
                [
                    (f"1 - {ratio('error_rate', '1h')}", "{{model}} last hour"),
                    (f"1 - {ratio('error_rate', '7d')} offset 1h", "{{model}} 7 days before"),
                ],
                0,
                38,
                unit="percentunit",
                description="Accuracy on labelled production traffic; the clean-accuracy-change rule watches it",
            ),
            panel(
                "Busy clients with low query entropy (under 1 bit), per minute",
                [
                    (
                        'sum by (model, kind) (rate(advmon_client_query_entropy_bits_bucket{le="1.0"}[15m])) * 60',
                        "{{model}} {{kind}}",
                    )
                ],
                12,
                38,
                description="Client-minutes whose predicted labels or inputs concentrate in few bins: probing",
            ),
        ],
    )


def debug():
    return dashboard("advmon-debug", "advmon / debug", [
        panel("Confidence distribution", [(
            "sum by (le) (increase(advmon_prediction_confidence_bucket[15m]))", "{{le}}")],
            0, 0, 12, 8, "heatmap"),
        panel("Anomaly score / threshold distribution (above 1: flagged)", [(
            "sum by (le) (increase(advmon_anomaly_score_ratio_bucket[15m]))", "{{le}}")],
            12, 0, 12, 8, "heatmap"),
        panel("Drift detector statistic and threshold",
              [("advmon_drift_statistic", "{{rule}} {{model}} {{stat}}")], 0, 8),
        panel("Flagged inputs in the last hour (samples: topic suspicious-inputs)",
              [("topk(20, sum by (model, reason) (increase(advmon_suspicious_events_total[1h])))",
                "{{model}} {{reason}}")], 12, 8, kind="table"),
        panel("Exact duplicate queries/s", [("sum by (model) (rate(advmon_duplicate_queries_total[5m]))", "{{model}}")],
              0, 16, unit="ops"),
        panel("Fingerprint index memory", [("advmon_fingerprint_index_bytes", "bytes")], 12, 16, unit="bytes"),
        panel("Scorer embeddings/s", [("sum by (outcome) (rate(advmon_scorer_embeddings_total[5m]))", "{{outcome}}")],
              0, 24, unit="ops"),
        panel("Late events/s and watermark lag",
              [("rate(advmon_late_events_total[5m])", "late events/s"), ("time() - advmon_watermark_seconds",
                                                                         "watermark lag (s)")], 12, 24),
        panel("Client input entropy (bits) per closed minute", [(
            'sum by (le) (increase(advmon_client_query_entropy_bits_bucket{kind="input"}[15m]))', "{{le}}")],
            0, 32, 12, 8, "heatmap"),
        panel("Client label entropy (bits) per closed minute", [(
            'sum by (le) (increase(advmon_client_query_entropy_bits_bucket{kind="label"}[15m]))', "{{le}}")],
            0, 40, 12, 8, "heatmap"),
        panel("Client query rate (queries/s) per closed minute", [(
            "sum by (le) (increase(advmon_client_query_rate_bucket[15m]))", "{{le}}")],
            12, 32, 12, 8, "heatmap"),
        panel("Alerter: messages read beside faust's consumer/s (faust skipped or dropped them)",
              [("sum by (topic) (rate(advmon_alerter_caught_up_messages_total[5m]))", "{{topic}}")], 12, 40,
              unit="ops"),
        panel("Ingest: other workers' margin-counts messages/s (refused: did not decode)",
              [("sum by (outcome) (rate(advmon_margin_counts_messages_total[5m]))", "{{outcome}}")], 0, 48,
              unit="ops"),
        panel("Alerter: how long the current rebalance has lasted (table recovery included; 0: none)",
              [("max by (instance) (advmon_alerter_rebalance_seconds)", "{{instance}}")], 12, 48, unit="s"),
        panel("Query index look-back (event time; under 15 min: AdvmonFingerprintLookbackShort)",
              [("min by (instance) (advmon_fingerprint_lookback_seconds) < +Inf", "{{instance}}")], 0, 56, unit="s",
              description="How far back a new query is matched with earlier ones; shown once an index has forgotten "
                          "queries"),
    ])


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n"
            for name, build in (("executive", executive), ("oncall", oncall), ("debug", debug))}


if __name__ == "__main__":
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
