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

Names and metadata follow Sloth's conventions, so Sloth's dashboards and tooling read them: the error ratio
per window ``slo:sli_error:ratio_rate<window>`` (labels ``sloth_service="advmon"``, ``sloth_slo``,
``sloth_id``, ``sloth_window``, the SLO's own ``labels`` and ``model``), and per SLO
``slo:objective:ratio``, ``slo:error_budget:ratio``, ``slo:time_period:days``,
``slo:current_burn_rate:ratio``, ``slo:period_burn_rate:ratio``,
``slo:period_error_budget_remaining:ratio`` and ``sloth_slo_info``. Alerts carry ``severity``, ``slo``,
``sloth_severity`` and the SLO's labels; summaries fill ``{model}`` from the alert's labels.

>>> from monitor.spec.rules import load_rules_text
>>> rules = load_rules_text("slos: [{name: anomaly, sli: input_anomaly_rate, objective: 0.99, min_events: 100,"
...                         " labels: {team: ml-sec}, summary: '{model} sees odd inputs'}]")
>>> group = render_prometheus_rules(rules)["groups"][0]
>>> [r.get("record") or r["alert"] for r in group["rules"]][:2]
['slo:sli_error:ratio_rate5m', 'slo:sli_error:ratio_rate30m']
>>> alert = group["rules"][-1]
>>> alert["labels"]
{'team': 'ml-sec', 'severity': 'ticket', 'slo': 'anomaly', 'sloth_severity': 'ticket'}
>>> alert["annotations"]["summary"]
'{{ $labels.model }} sees odd inputs'
"""

from __future__ import annotations

from monitor.contracts.alerts import alert_name as contract_alert_name
from monitor.contracts.sli import SLI_DEFINITIONS
from monitor.spec.durations import format_duration
from monitor.spec.rules import Rules, Slo, absolute_url

RECORD = "slo:sli_error:ratio_rate{window}"
BAD, TOTAL = "advmon_sli_bad_events_total", "advmon_sli_events_total"
SERVICE = "advmon"


def alert_name(slo: Slo, severity: str) -> str:
    return contract_alert_name(slo.name, severity)


def _windows(slo: Slo) -> list[int]:
    return sorted({w for tier in slo.tiers for w in (tier.long_s, tier.short_s)})


def sloth_labels(slo: Slo) -> dict[str, str]:
    """Sloth's identity labels of an SLO's series, then the SLO's own labels."""
    return {"sloth_id": f"{SERVICE}-{slo.name}", "sloth_service": SERVICE, "sloth_slo": slo.name, **slo.labels}


def _filter(slo: Slo) -> str:
    return f'{{sloth_id="{SERVICE}-{slo.name}", sloth_service="{SERVICE}", sloth_slo="{slo.name}"}}'


def _ratio(slo: Slo, window: int) -> dict:
    name = format_duration(window)
    selector = f'{{sli="{slo.sli}"}}'
    return {"record": RECORD.format(window=name),
            "expr": f"sum by (model) (rate({BAD}{selector}[{name}]))\n"
                    f"/ sum by (model) (rate({TOTAL}{selector}[{name}]))",
            "labels": {**sloth_labels(slo), "sloth_window": name, "slo": slo.name}}


def _period_ratio(slo: Slo, shortest: int) -> dict:
    """The error ratio over the SLO period, averaged from the shortest window's record (as Sloth does: cheap)."""
    period, short = format_duration(slo.period), RECORD.format(window=format_duration(shortest))
    return {"record": RECORD.format(window=period),
            "expr": f"sum_over_time({short}{_filter(slo)}[{period}])\n"
                    f"/ ignoring (sloth_window)\ncount_over_time({short}{_filter(slo)}[{period}])",
            "labels": {"sloth_window": period}}


def _metadata(slo: Slo, shortest: int) -> list[dict]:
    """Sloth's metadata records: objective, budget, period, burn rates and the error budget remaining."""
    labels, sel = {**sloth_labels(slo), "slo": slo.name}, _filter(slo)
    budget = 1.0 - slo.objective

    def burn(window: str) -> str:
        return (f"{RECORD.format(window=window)}{sel}\n/ on (sloth_id, sloth_slo, sloth_service) group_left\n"
                f"slo:error_budget:ratio{sel}")

    records = [("slo:objective:ratio", f"vector({slo.objective:.6g})"),
               ("slo:error_budget:ratio", f"vector({budget:.6g})"),
               ("slo:time_period:days", f"vector({slo.period / 86400:g})"),
               ("slo:current_burn_rate:ratio", burn(format_duration(shortest))),
               ("slo:period_burn_rate:ratio", burn(format_duration(slo.period))),
               ("slo:period_error_budget_remaining:ratio", f"1 - slo:period_burn_rate:ratio{sel}")]
    info = {"record": "sloth_slo_info", "expr": "vector(1)",
            "labels": {**labels, "sloth_objective": f"{slo.objective * 100:g}", "sloth_mode": "advmon",
                       "sloth_spec": "advmon/rules"}}
    return [{"record": name, "expr": expr, "labels": labels} for name, expr in records] + [info]


def prometheus_summary(slo: Slo, severity: str) -> str:
    """The SLO's summary template in Prometheus' template language (client ids are not labels here)."""
    if not slo.summary:
        return f"{slo.name}: {slo.sli} burning its error budget"
    return slo.summary.format(model="{{ $labels.model }}", client_id="", name=slo.name, severity=severity)


def _alert(slo: Slo, severity: str) -> dict:
    budget = 1.0 - slo.objective
    clauses = []
    for tier in (t for t in slo.tiers if t.severity == severity):
        long_name, short_name = tier.names
        threshold = f"{tier.factor:.6g} * {budget:.6g}"
        clauses.append(
            f'(\n  max without (sloth_window) ({RECORD.format(window=long_name)}{_filter(slo)} > {threshold})\n'
            f'  and max without (sloth_window) ({RECORD.format(window=short_name)}{_filter(slo)} > {threshold})\n'
            f'  and on (model) sum by (model) (increase({TOTAL}{{sli="{slo.sli}"}}[{long_name}]))'
            f' >= {slo.min_events}\n)'
        )
    return {"alert": alert_name(slo, severity), "expr": "\nor\n".join(clauses),
            "keep_firing_for": format_duration(slo.resolve_after),
            "labels": {**slo.labels, "severity": severity, "slo": slo.name, "sloth_severity": severity},
            "annotations": {"summary": prometheus_summary(slo, severity), "runbook_url": slo.runbook}}


def render_prometheus_rules(rules: Rules) -> dict:
    groups = []
    for slo in rules.slos:
        if slo.scope != "model" or slo.sli not in SLI_DEFINITIONS:
            continue
        windows = _windows(slo)
        records = [_ratio(slo, w) for w in windows]
        if slo.period not in windows:
            records.append(_period_ratio(slo, windows[0]))
        alerts = [_alert(slo, severity) for severity in ("page", "ticket") if severity in slo.severities]
        groups.append({"name": f"advmon-slo-{slo.name}", "interval": "1m", "rules": records + alerts})
        groups.append({"name": f"advmon-slo-{slo.name}-meta", "interval": "1m", "rules": _metadata(slo, windows[0])})
    return {"groups": [*groups, _pipeline_group(rules)]}


def render_prometheus_rule_resource(rules: Rules, name: str = "advmon-slos") -> dict:
    """The same groups as a prometheus-operator ``PrometheusRule`` resource."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "advmon", "role": "alert-rules"}},
            "spec": render_prometheus_rules(rules)}


#: The look-back below which a query index's ticket fires: a prober who spaces its near-identical queries further
#: apart than this is matched with none of them (a thousand queries then take over ten days).
LOOKBACK_FLOOR_S = 900


def _pipeline_group(rules: Rules) -> dict:
    """What the daemon cannot see from the inside: all traffic (and with it event time) stopping, and an alerter
    stuck in a rebalance (it evaluates nothing meanwhile); and a query index that forgets too soon for its traffic."""
    return {"name": "advmon-pipeline", "rules": [
        _pipeline_alert(rules, "AdvmonNoTraffic", "(sum(rate(advmon_events_total[15m])) or vector(0)) == 0",
                        "advmon ingest has counted no events for 15 minutes (or is not scraped)"),
        _pipeline_alert(rules, "AdvmonAlerterRebalanceStuck", "max(advmon_alerter_rebalance_seconds) > 900",
                        "an advmon alerter has been rebalancing (table recovery included) for over 20 minutes: it "
                        "evaluates and pages nothing meanwhile"),
        _pipeline_alert(rules, "AdvmonFingerprintLookbackShort",
                        f"min(min_over_time(advmon_fingerprint_lookback_seconds[1h])) < {LOOKBACK_FLOOR_S}",
                        f"an advmon query index reached back less than {LOOKBACK_FLOOR_S // 60} minutes of event time "
                        "in the last hour: black-box probers who space their queries further apart are not matched"),
    ]}


def _pipeline_alert(rules: Rules, name: str, expr: str, summary: str) -> dict:
    """A ticket after 5 minutes of ``expr``; its runbook section is named after the alert."""
    return {"alert": name, "expr": expr, "for": "5m", "labels": {"severity": "ticket"},
            "annotations": {"summary": summary,
                            "runbook_url": absolute_url(rules.runbook_base, f"docs/runbooks.md#{name.lower()}")}}


def skipped_slos(rules: Rules) -> list[str]:
    return [slo.name for slo in rules.slos if slo.scope != "model"]


def render_inhibit_rules() -> list[dict]:
    """Alertmanager ``inhibit_rules``: a firing page mutes the ticket of the same SLO and model."""
    return [{"source_matchers": ['severity="page"', 'alertname=~"Advmon.+"'],
             "target_matchers": ['severity="ticket"', 'alertname=~"Advmon.+"'],
             "equal": ["slo", "model"]}]

