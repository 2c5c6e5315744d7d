"""The alert path on hand-made SLI rows: fire, hysteresis, resolve with the same dedup key, inhibition."""

import numpy as np
import pytest

from monitor.alerter import Alerter
from monitor.alerts import Alert
from monitor.pipeline import Pipeline
from monitor.rules import load_rules_text
from monitor.sli import SliRows

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


def test_routes_and_ticket_inhibited_by_page():
    alerter, alerts = run([0] * 30 + [30] * 10)
    pipeline = Pipeline(RULES.routes)
    notifications = pipeline.process(alerts, now=40 * 60.0, firing=alerter.firing)
    assert [n.receiver for n in notifications] == ["pager"]
    assert pipeline.process(alerts, now=41 * 60.0, firing=alerter.firing) == []  # deduplicated


def test_long_window_excludes_rows_that_arrived_ahead_of_evaluation():
    from monitor.burnrate import BurnRateWindows

    windows = BurnRateWindows(horizon_buckets=10)
    row = windows.rows([("m", None)])
    windows.add(row, np.array([3]), np.array([1.0]), np.array([10.0]), np.array([3.0]))
    windows.add(row, np.array([11]), np.array([9.0]), np.array([9.0]), np.array([11.0]))  # ahead: shares bucket 1's column
    bad, total = windows.sums(end=5, buckets=10)   # the window [-5, 5) must not see bucket 11
    assert (bad.tolist(), total.tolist()) == ([1.0], [10.0])
    bad, total = windows.sums(end=12, buckets=10)
    assert (bad.tolist(), total.tolist()) == ([10.0], [19.0])


def test_silences_and_maintenance_windows_hold_back_notifications_not_evaluation():
    from monitor.rules import RulesError

    rules = load_rules_text("""
slos:
  - {name: anomaly, sli: input_anomaly_rate, scope: client, objective: 0.99, min_events: 10, resolve_after: 5m}
silences:
  - {matchers: {client_id: c1}, starts: "1970-01-01T00:00:00Z", ends: 3600, comment: red-team exercise}
maintenance:
  - {matchers: {client_id: c2}, weekday: thu, start: "00:00", duration: 1h}
""")
    alerter, pipeline = Alerter(rules, bucket_s=60), Pipeline(rules.routes, (*rules.silences, *rules.maintenance))
    sent = []
    for index in range(120):  # 1970-01-01 was a Thursday: c2's window covers the first hour too
        alerter.ingest(SliRows.concat([minute(index, 30 if index >= 10 else 0, client=c) for c in ("c1", "c2", "c3")]))
        alerts = alerter.evaluate_until(index + 1)
        sent += [a for n in pipeline.process(alerts, now=(index + 1) * 60.0, firing=alerter.firing) for a in n.alerts]
    fired = {a.client_id for a in alerter.slos[0].firing}
    assert fired == {"c1", "c2", "c3"}  # evaluation saw all three
    assert {a.client_id for a in sent} == {"c3"}  # notifications for c1 and c2 were held back
    with pytest.raises(RulesError, match="ends must be after starts"):
        load_rules_text("silences: [{starts: 100, ends: 50}]")


def test_repeat_interval_sends_reminders_that_are_deliveries_of_their_own():
    from monitor.payloads import Secrets, build_deliveries
    from monitor.rules import Receiver

    rules = load_rules_text("""
routes: [{receivers: [stdout], repeat_interval: 1h}]
""")
    a = Alert.firing(rule="s/page", slo="s", severity="page", model="m", sli="x", fired_at=0.0, summary="s")
    pipeline = Pipeline(rules.routes)
    sent = [(t, n.reminder_at) for t in range(0, 4 * 3600, 600) for n in pipeline.process([a], now=float(t))]
    assert sent == [(0, None), (3600, 3600.0), (7200, 7200.0), (10800, 10800.0)]
    restarted = Pipeline(rules.routes)
    restarted.remember([a])  # announced before the restart: no immediate repeat
    assert restarted.process([a], now=1800.0) == [] and restarted.process([a], now=3600.0)[0].reminder_at == 3600.0
    hook = Receiver(name="hook", type="webhook", url="http://127.0.0.1:9/x")
    [first] = build_deliveries(hook, Pipeline(rules.routes).process([a], now=0.0)[0], Secrets())
    [reminder] = build_deliveries(hook, restarted.process([a], now=7200.0)[0], Secrets())
    assert first.delivery_id != reminder.delivery_id  # the outbox sends a reminder instead of refusing it


@pytest.mark.parametrize(("detector", "within_minutes"), [("page_hinkley", 60), ("kswin", 60), ("adwin", 180)])
def test_drift_detectors_find_a_confidence_drop_and_stay_quiet_before_it(detector, within_minutes):
    """A 0.1 drop in mean confidence (per-minute means of 50 events); ADWIN's bound needs more points."""
    from monitor.drift import DriftEvaluator
    from monitor.rules import DriftRule

    rule = DriftRule(name="d", detector=detector, delta=0.005 if detector == "page_hinkley" else 0.002,
                     threshold=0.2, alpha=0.001)
    evaluator = DriftEvaluator(rule, bucket_s=60)
    rng = np.random.default_rng(7)
    alerts = []
    for b in range(240 + within_minutes + 30):
        n = 50
        level = 0.95 if b < 240 else 0.85
        rows = SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
                                    client=np.array(["c"] * n, dtype=object), ts=np.full(n, b * 60.0),
                                    flags={"events": np.ones(n, bool), "clean_events": np.ones(n, bool)},
                                    confidence=np.clip(rng.normal(level, 0.05, n), 0, 1))
        evaluator.ingest(rows)
        alerts += evaluator.evaluate(end_bucket=b + 1)
    fired = [a for a in alerts if a.status == "firing"]
    assert fired and fired[0].fired_at >= 240 * 60, [a.fired_at / 60 for a in fired]  # nothing before the drop
    assert fired[0].fired_at <= (240 + within_minutes) * 60
    assert evaluator.statistics["m"]["value"] < 0.9


def test_per_client_windows_release_keys_idle_for_the_whole_horizon():
    from monitor.slo_eval import SloEvaluator

    slo = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, scope: client, objective: 0.99, "
                          "min_events: 10, severities: [page]}]").slos[0]
    evaluator = SloEvaluator(slo, bucket_s=60)
    horizon = evaluator.windows.length
    attacker_alerts = []
    for b in range(3 * horizon):
        clients = [f"k{b}-{i}" for i in range(5)] + ["attacker"]  # five new keys a minute, one that stays
        rows = SliRows.concat([minute(b, 20 if c == "attacker" else 0, total=20, client=c) for c in clients])
        evaluator.ingest(rows)
        attacker_alerts += [a for a in evaluator.evaluate(end_bucket=b + 1) if a.client_id == "attacker"]
    assert evaluator.windows.live_keys <= 5 * (horizon + 61) + 1  # not 5 x 3 x horizon
    assert len(evaluator.windows) <= 5 * (horizon + 61) + 1  # released rows are reused: the arrays stop growing
    assert [a.status for a in attacker_alerts] == ["firing"]  # the busy key keeps its row and its open alert
