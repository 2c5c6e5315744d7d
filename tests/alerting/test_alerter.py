"""The alert path on hand-made SLI rows: fire, hysteresis, resolve with the same dedup key, inhibition."""

import numpy as np

from monitor.alerting.alerter import Alerter
from monitor.contracts.sli import SliRows
from monitor.spec.rules import load_rules_text

RULES = load_rules_text("""
slos:
  - {name: anomaly, sli: input_anomaly_rate, scope: client, objective: 0.99, min_events: 10, resolve_after: 5m}
receivers:
  - {name: pager, type: pagerduty, key_env: PD_KEY}
  - {name: tickets, type: webhook, url: "http://127.0.0.1:1/tickets"}
routes:
  - {match: {severity: page}, receivers: [pager]}
  - {receivers: [tickets]}
""")


def minute(index, bad, total=60, client="c1"):
    flags = {"traffic_events": np.ones(total, bool), "anomalous": np.arange(total) < bad}
    return SliRows.from_columns(
        bucket=np.full(total, index * 60), model=np.array(["m"] * total, dtype=object),
        client=np.array([client] * total, dtype=object), ts=index * 60.0 + np.arange(total) * 0.5,
        flags=flags, confidence=np.ones(total))


def run(bad_by_minute):
    alerter = Alerter(RULES, bucket_s=60, grace_s=0)
    out = []
    for index, bad in enumerate(bad_by_minute):
        alerter.ingest(minute(index, bad))
        out += alerter.advance(watermark=(index + 1) * 60.0)
    return alerter, out


def test_quiet_traffic_never_alerts():
    _, alerts = run([0] * 120)
    assert alerts == []


def test_attack_fires_page_then_resolves_after_hysteresis_with_same_key():
    # 30 quiet minutes, then 10 minutes with half of the client's events anomalous (burn rate 50).
    _, alerts = run([0] * 30 + [30] * 10 + [0] * 40)
    fired = [a for a in alerts if a.status == "firing"]
    resolved = [a for a in alerts if a.status == "resolved"]
    [page] = [a for a in fired if a.severity == "page"]
    # 6h/30m (factor 6) needs > 6% over 30m and 6h: the 5th attacked minute (150 / 2100 = 7.1%).
    # 1h/5m (factor 14.4) would need 13 attacked minutes after 30 quiet ones.
    assert page.fired_at == 35 * 60 and page.windows == ["6h", "30m"]
    assert page.burn_rates == {"6h": 7.143, "30m": 8.333}
    assert page.first_event_ts == 30 * 60.0 and page.time_to_detect_s == 300.0
    assert page.client_id == "c1"
    assert [a.dedup_key for a in resolved] == [page.dedup_key]
    # the 30m window holds >= 4 attacked minutes (> 6%) until minute 66; then 5 minutes of hysteresis
    assert resolved[0].resolved_at == 71 * 60


def test_burst_from_a_new_client_fires_the_fast_tier():
    alerter = Alerter(RULES, bucket_s=60, grace_s=0)
    alerter.ingest(minute(0, bad=30))
    alerts = alerter.advance(watermark=60.0)
    assert {a.severity for a in alerts} == {"page", "ticket"}  # the pipeline inhibits the ticket
    [page] = [a for a in alerts if a.severity == "page"]
    assert page.windows == ["1h", "5m"] and page.time_to_detect_s == 60.0


def test_low_traffic_guard():
    alerter = Alerter(RULES, bucket_s=60, grace_s=0)
    alerter.ingest(minute(0, bad=5, total=5))
    assert alerter.advance(watermark=60.0) == []
