"""The notification path on alerts from the evaluator: routes, inhibition, grouping (group_wait,
group_interval, max_alerts), dedupe, silences, repeats."""

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
    assert pipeline.process(alerts, now=40 * 60.0, firing=alerter.firing) == []  # group_wait: 30 s by default
    notifications = pipeline.flush(now=40 * 60.0 + 30)
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
routes: [{receivers: [stdout], repeat_interval: 1h, group_wait: 0s}]
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


def page(client: str, at: float, z: float = 10.0, model: str = "m", keys: tuple[str, ...] = ()) -> Alert:
    return Alert.firing(rule="standout/page", slo="group" if keys else "standout", severity="page", model=model,
                        client_id=None if keys else client, sli="x", fired_at=at, summary="s",
                        evidence={"keys": list(keys)} if keys else {"statistics": [{"name": "x", "z": z}]})


def test_a_group_waits_then_changes_go_out_at_most_every_group_interval():
    rules = load_rules_text("routes: [{receivers: [pager], group_wait: 30s, group_interval: 5m}]\n"
                            "receivers: [{name: pager, type: webhook, url: 'http://127.0.0.1:9/x'}]")
    pipeline = Pipeline(rules.routes)
    sent = []
    for minute_ in range(0, 30):  # a new attacking key every minute, each one alert of one group
        sent += [(minute_, len(n.alerts)) for n in pipeline.process([page(f"k{minute_}", minute_ * 60.0)],
                                                                     now=minute_ * 60.0 + 59)]
    assert sent == [(1, 2), (6, 5), (11, 5), (16, 5), (21, 5), (26, 5)]  # waits from arrival, then every 5 min


def test_one_attack_over_a_hundred_keys_is_at_most_three_page_notifications():
    """The keys' own pages arrive over minutes; the group alert names them all and mutes their pages."""
    rules = load_rules_text("routes: [{match: {severity: page}, receivers: [pager], max_alerts: 10}]\n"
                            "receivers: [{name: pager, type: webhook, url: 'http://127.0.0.1:9/x'}]")
    pipeline = Pipeline(rules.routes)
    keys = [f"sybil-{i:03d}" for i in range(100)]
    sent, firing = [], []
    for step in range(10):
        now = 600.0 + step * 60
        alerts = [page(k, now, z=float(step * 10 + i)) for i, k in enumerate(keys[step * 10:(step + 1) * 10])]
        if step == 2:  # the group detector links them
            alerts.append(page("", now, keys=tuple(keys)))
        firing += alerts
        sent += pipeline.process(alerts, now=now, firing=firing)
    sent += pipeline.flush(now=3600.0)
    assert 1 <= len(sent) <= 3, [(n.group_labels, len(n.alerts)) for n in sent]
    assert all(len(n.alerts) <= 10 for n in sent)
    truncated = [n for n in sent if n.truncated]
    assert truncated and truncated[0].alerts[0].evidence["statistics"][0]["z"] == 19.0  # strongest first
    assert any(n.alerts[0].evidence.get("keys") == keys for n in sent)  # one alert names every key
