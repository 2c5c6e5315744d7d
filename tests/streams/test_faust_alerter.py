"""The faust alerter's resumption check, without a broker: which spans it reads beside faust's consumer."""

import asyncio

from monitor.settings import Settings
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics
from streams.faust_alerter import AlerterService
from streams.http import Health


class FakeSpans:
    """Stands in for the broker: the committed messages of a partition, by offset."""

    def __init__(self, messages):
        self.messages, self.asked = messages, []

    def read(self, topic, partition, start, end):
        self.asked.append((topic, partition, start, end))
        return [(o, v) for o, v in sorted(self.messages.items()) if start <= o < end], end


def missed(service, offset, applied, dense):
    async def collect():
        return [m async for m in service._missed("t.alerts", 0, offset, applied, dense=dense)]
    return asyncio.run(collect())


def test_only_a_gap_wider_than_the_next_message_is_read_from_the_broker(tmp_path):
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", outbox_path=str(tmp_path / "o.sqlite3"),
                        alerter_data_dir=str(tmp_path / "data"))
    service = AlerterService(settings, load_rules_text("slos: []"), Metrics(), Health())
    service.spans = spans = FakeSpans({5: b"e", 6: b"f", 9: b"i"})
    assert missed(service, 5, 4, dense=True) == []  # the next offset
    assert missed(service, 6, 4, dense=False) == []  # the next message after its transaction's commit marker
    assert missed(service, 8, 5, dense=True) == [(6, b"f")]  # offsets 6 and 7 were not handed over
    assert missed(service, 10, 5, dense=False) == [(6, b"f"), (9, b"i")]
    assert missed(service, 10, -1, dense=True) == []  # no stored progress: the group's offset stands
    assert spans.asked == [("t.alerts", 0, 6, 8), ("t.alerts", 0, 6, 10)]
    assert service.metrics.registry.get_sample_value("advmon_alerter_caught_up_messages_total",
                                                     {"topic": "alerts"}) == 3


class FakeConsumer:
    def __init__(self, end):
        self.end = end

    def highwater(self, tp):
        return self.end


def test_the_tail_of_alerts_is_taken_in_after_a_quiet_while_where_faust_did_not_hand_it_over(tmp_path, monkeypatch):
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", outbox_path=str(tmp_path / "o.sqlite3"),
                        alerter_data_dir=str(tmp_path / "data"))
    service = AlerterService(settings, load_rules_text("slos: []"), Metrics(), Health())
    service.spans = FakeSpans({5: b"e", 6: b"f", 7: b"g"})
    taken = []

    async def take(offset, value):
        taken.append(offset)
        service.handled["alerts"] = offset

    monkeypatch.setattr(service, "_take", take)
    monkeypatch.setattr(service, "_owns_alerts", lambda: True)
    monkeypatch.setattr(service, "handled", {"alerts": 5})
    monkeypatch.setattr(type(service.app), "consumer", FakeConsumer(end=8))
    service._delivering = True
    asyncio.run(service._deliver_tail())
    assert taken == []  # the deliver agent had an event just now: faust may still hand them over
    service._last_delivery -= 60
    asyncio.run(service._deliver_tail())
    assert taken == [6, 7]
    asyncio.run(service._deliver_tail())
    assert taken == [6, 7]  # nothing past the end


def test_a_restarted_alerter_sends_the_groups_that_were_waiting_without_new_traffic(tmp_path, monkeypatch):
    """Before its first event (no partition evaluated, no transition taken in), an alerter that owns alerts sends
    what its table says was waiting in a group, once the wait is over in event time."""
    from monitor.contracts.alerts import Alert

    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", outbox_path=str(tmp_path / "o.sqlite3"),
                        alerter_data_dir=str(tmp_path / "data"))
    rules = load_rules_text("routes: [{receivers: [stdout], group_wait: 0s}]")
    service = AlerterService(settings, rules, Metrics(), Health())
    waiting = Alert.firing(rule="anomaly/page", slo="anomaly", severity="page", model="m", client_id="c", sli="x",
                           fired_at=1795600800.0, summary="too many anomalies")
    sent = []

    async def send(notifications):
        sent.extend(a.alert_id for n in notifications for a in n.alerts)

    monkeypatch.setattr(service, "_send", send)
    monkeypatch.setattr(service, "_owns_alerts", lambda: True)
    monkeypatch.setattr(service, "pending", {waiting.alert_id: {"alert": waiting.model_dump(), "at": 1795600800.0}})
    monkeypatch.setattr(service, "open_alerts", {})
    asyncio.run(service._flush())
    assert sent == [waiting.alert_id]


class FakeCommitBookkeeping:
    """faust's consumer bookkeeping of acknowledged offsets, as the commit reads it."""

    def __init__(self):
        from collections import defaultdict

        self._acked, self._acked_index, self._gap = defaultdict(list), defaultdict(set), defaultdict(set)


def test_the_group_commits_after_what_the_state_took_in_not_after_faust_acknowledgements(tmp_path, monkeypatch):
    from faust.types import TP

    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", outbox_path=str(tmp_path / "o.sqlite3"),
                        alerter_data_dir=str(tmp_path / "data"))
    service = AlerterService(settings, load_rules_text("slos: []"), Metrics(), Health())
    consumer = FakeCommitBookkeeping()
    monkeypatch.setattr(type(service.app), "consumer", consumer)
    tp = TP("t.sli-buckets", 0)
    consumer._acked[tp] += [12, 12, 13, 15]  # what stalled faust's own commits: a repeat and a break
    consumer._acked_index[tp] |= {12, 13, 15}
    assert service._commit_point(tp) is None  # nothing taken in yet: nothing to commit
    service._took(tp, 15)
    service._took(tp, 13)  # read again after a rebalance: the commit does not go back
    assert service._commit_point(tp) == 16
    assert consumer._acked[tp] == [] and consumer._acked_index[tp] == set()


def test_a_lasting_rebalance_shows_on_its_gauge_and_in_the_log_with_where_the_agents_wait(tmp_path, caplog):
    """faust's rebalance sensor times it; the gauge reads it (from the metrics thread, even with the event loop
    stuck), and the heartbeat logs it once it has lasted ``report_after_s``: a stuck alerter pages nothing."""
    import time

    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", outbox_path=str(tmp_path / "o.sqlite3"),
                        alerter_data_dir=str(tmp_path / "data"))
    service = AlerterService(settings, load_rules_text("slos: []"), Metrics(), Health())

    def gauge():
        return service.metrics.registry.get_sample_value("advmon_alerter_rebalance_seconds")

    assert gauge() == 0.0 and service.rebalance.report_after_s == 360.0  # six session timeouts of 60 s
    state = service.app.sensors.on_rebalance_start(service.app)
    time.sleep(0.05)
    assert gauge() >= 0.05
    asyncio.run(service._heartbeat())
    assert "rebalance has lasted" not in caplog.text  # not for long enough yet
    service.rebalance.report_after_s = 0.0
    asyncio.run(service._heartbeat())
    assert "a consumer-group rebalance has lasted 0 s" in caplog.text and "where the agents wait" in caplog.text
    service.app.sensors.on_rebalance_end(service.app, state)
    assert gauge() == 0.0
