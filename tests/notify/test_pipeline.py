"""The notification path on alerts from the evaluator: routes, inhibition, dedupe, silences, repeats."""

import pytest

from monitor.alerting.alerter import Alerter
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SliRows
from monitor.notify.pipeline import Pipeline
from monitor.spec.rules import load_rules_text
from tests.alerting.test_alerter import RULES, minute, run


def test_routes_and_ticket_inhibited_by_page():
    alerter, alerts = run([0] * 30 + [30] * 10)
    pipeline = Pipeline(RULES.routes)
    notifications = pipeline.process(alerts, now=40 * 60.0, firing=alerter.firing)
    assert [n.receiver for n in notifications] == ["pager"]
    assert pipeline.process(alerts, now=41 * 60.0, firing=alerter.firing) == []  # deduplicated


def test_silences_and_maintenance_windows_hold_back_notifications_not_evaluation():
    from monitor.spec.rules import RulesError

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
    from monitor.notify.payloads import Secrets, build_deliveries
    from monitor.spec.rules import Receiver

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
