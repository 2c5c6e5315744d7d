"""``advmon rules render``: the same SLOs as Prometheus recording and alerting rules, plus the
Alertmanager inhibition that lets a page silence the ticket for the same SLO and model.

For teams that alert from Prometheus. The rules read the counters the alerter exports per closed
bucket (``advmon_sli_bad_events_total`` and ``advmon_sli_events_total`` by ``sli`` and ``model``),
so they see each minute once every ingest and scorer instance has reported it. Only model-scoped
SLOs render: client ids are not Prometheus labels (bounded cardinality), so per-client SLOs and the
river drift detectors, the per-client population tests and the Sybil groups stay with the daemon.
``keep_firing_for`` mirrors the daemon's ``resolve_after`` hysteresis. An objective stated relative to the
profile's measured baselines (``max_rate: 3x baseline``) renders with its absolute ``objective``: Prometheus
does not know the baselines.

>>> from monitor.spec.rules import load_rules_text
>>> rules = load_rules_text("slos: [{name: anomaly, sli: input_anomaly_rate, objective: 0.99, min_events: 100}]")
>>> groups = render_prometheus_rules(rules)["groups"]
>>> [r.get("record") or r["alert"] for r in groups[0]["rules"]][:2], groups[0]["rules"][-1]["labels"]
(['advmon:slo_error_ratio:rate5m', 'advmon:slo_error_ratio:rate30m'], {'severity': 'ticket', 'slo': 'anomaly'})
"""

from __future__ import annotations

from monitor.contracts.sli import SLI_DEFINITIONS
from monitor.spec.durations import format_duration
from monitor.spec.rules import Rules, Slo

RECORD = "advmon:slo_error_ratio:rate{window}"
BAD, TOTAL = "advmon_sli_bad_events_total", "advmon_sli_events_total"


def alert_name(slo: Slo, severity: str) -> str:
    return (
        "Advmon" + "".join(part.capitalize() for part in slo.name.replace("_", "-").split("-")) + severity.capitalize()
    )


def _windows(slo: Slo) -> list[int]:
    return sorted({w for tier in slo.tiers for w in (tier.long_s, tier.short_s)})


def _ratio(slo: Slo, window: int) -> dict:
    name = format_duration(window)
    selector = f'{{sli="{slo.sli}"}}'
    return {"record": RECORD.format(window=name),
            "expr": f"sum by (model) (rate({BAD}{selector}[{name}]))\n"
                    f"/ sum by (model) (rate({TOTAL}{selector}[{name}]))",
            "labels": {"slo": slo.name}}


def _alert(slo: Slo, severity: str) -> dict:
    budget = 1.0 - slo.objective
    clauses = []
    for tier in (t for t in slo.tiers if t.severity == severity):
        long_name, short_name = tier.names
        threshold = f"{tier.factor:.6g} * {budget:.6g}"
        clauses.append(
            f'(\n  {RECORD.format(window=long_name)}{{slo="{slo.name}"}} > {threshold}\n'
            f'  and {RECORD.format(window=short_name)}{{slo="{slo.name}"}} > {threshold}\n'
            f'  and on (model) sum by (model) (increase({TOTAL}{{sli="{slo.sli}"}}[{long_name}]))'
            f' >= {slo.min_events}\n)'
        )
    return {"alert": alert_name(slo, severity), "expr": "\nor\n".join(clauses),
            "keep_firing_for": format_duration(slo.resolve_after),
            "labels": {"severity": severity, "slo": slo.name},
            "annotations": {"summary": slo.summary or f"{slo.name}: {slo.sli} burning its error budget",
                            "runbook_url": slo.runbook}}


def render_prometheus_rules(rules: Rules) -> dict:
    groups = []
    for slo in rules.slos:
        if slo.scope != "model" or slo.sli not in SLI_DEFINITIONS:
            continue
        records = [_ratio(slo, w) for w in _windows(slo)]
        alerts = [_alert(slo, severity) for severity in ("page", "ticket") if severity in slo.severities]
        groups.append({"name": f"advmon-slo-{slo.name}", "interval": "1m", "rules": records + alerts})
    return {"groups": [*groups, _pipeline_group()]}


def _pipeline_group() -> dict:
    """What the daemon cannot see from the inside: all traffic (and with it event time) stopping."""
    return {"name": "advmon-pipeline", "rules": [{
        "alert": "AdvmonNoTraffic", "expr": "(sum(rate(advmon_events_total[15m])) or vector(0)) == 0", "for": "5m",
        "labels": {"severity": "ticket"},
        "annotations": {"summary": "advmon ingest has counted no events for 15 minutes (or is not scraped)",
                        "runbook_url": "docs/runbooks.md#advmonnotraffic"}}]}


def skipped_slos(rules: Rules) -> list[str]:
    return [slo.name for slo in rules.slos if slo.scope != "model"]


def render_inhibit_rules() -> list[dict]:
    """Alertmanager ``inhibit_rules``: a firing page mutes the ticket of the same SLO and model."""
    return [{"source_matchers": ['severity="page"', 'alertname=~"Advmon.+"'],
             "target_matchers": ['severity="ticket"', 'alertname=~"Advmon.+"'],
             "equal": ["slo", "model"]}]

