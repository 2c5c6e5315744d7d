"""Notification delivery against real HTTP servers on loopback that fail on purpose."""

import hashlib
import hmac
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from monitor.contracts.alerts import Alert
from monitor.notify.pipeline import Notification
from monitor.notify.sinks.registry import build_sinks
from monitor.notify.store import SqliteStore
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics
from streams.broker import free_port


class Receiver:
    """A loopback HTTP server answering from a script of status codes (then 200), recording requests."""

    def __init__(self, script=(), headers=None, port=None, delay_s=0.0):
        self.script, self.extra_headers, self.requests = list(script), headers or {}, []
        self.delay_s, self.down, self.refused = delay_s, False, 0  # slow answers; 503 to everything while down
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay_s)
                if outer.down:
                    outer.refused += 1
                    status = 503
                else:
                    outer.requests.append((self.path, dict(self.headers), body))
                    status = outer.script.pop(0) if outer.script else 202
                self.send_response(status)
                for k, v in outer.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def alert(status="firing"):
    a = Alert.firing(rule="anomaly/page", slo="anomaly", severity="page", model="m", client_id="c", sli="x",
                     fired_at=1795600800.0, summary="too many anomalies", runbook_url="https://runbooks/anomaly")
    return a if status == "firing" else a.resolve(at=1795601400.0)


def sinks_for(yaml_text, environ, store=None, clock=None):
    rules = load_rules_text(yaml_text)
    sinks, dispatcher = build_sinks(rules, Metrics(), outbox_store={} if store is None else store, environ=environ,
                                    clock=clock or Clock())
    return {s.name: s for s in sinks}, dispatcher


def pagerduty(url):
    return (f"receivers: [{{name: pager, type: pagerduty, url: '{url}', key_env: PD_KEY}}]\n"
            "routes: [{receivers: [pager]}]")


def test_pagerduty_retries_5xx_until_accepted_then_resolves_with_the_same_dedup_key():
    server, clock = Receiver(script=[503, 502]), Clock()
    sinks, dispatcher = sinks_for(pagerduty(server.url), {"PD_KEY": "routing-key-1"}, clock=clock)
    try:
        sinks["pager"].send(Notification("pager", "g", {}, (alert(),)))
        assert len(server.requests) == 1 and dispatcher.outbox.pending_count == 1
        clock.now += 601  # past any backoff
        dispatcher.drain()
        clock.now += 601
        dispatcher.drain()
        assert len(server.requests) == 3 and dispatcher.outbox.pending_count == 0
        dispatcher.drain()
        assert len(server.requests) == 3  # sent once accepted, never again
        sinks["pager"].send(Notification("pager", "g", {}, (alert("resolved"),)))
        trigger, resolve = orjson.loads(server.requests[-2][2]), orjson.loads(server.requests[-1][2])
        assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
        assert trigger["dedup_key"] == resolve["dedup_key"] and trigger["routing_key"] == "routing-key-1"
        assert trigger["payload"]["severity"] == "critical" and trigger["links"][0]["href"] == "https://runbooks/anomaly"
    finally:
        server.close()


def test_429_waits_for_retry_after_and_4xx_gives_up_without_logging_secrets(caplog):
    server, clock = Receiver(script=[429], headers={"Retry-After": "120"}), Clock()
    sinks, dispatcher = sinks_for(pagerduty(server.url), {"PD_KEY": "s3cret-routing"}, clock=clock)
    try:
        sinks["pager"].send(Notification("pager", "g", {}, (alert(),)))
        clock.now += 100
        assert dispatcher.drain() == 0  # Retry-After: 120 s not over yet
        clock.now += 21
        assert dispatcher.drain() == 1 and dispatcher.outbox.pending_count == 0
        server.script = [400]
        with caplog.at_level(logging.WARNING, logger="advmon.delivery"):
            sinks["pager"].send(Notification("pager", "g", {}, (alert("resolved"),)))
        clock.now += 10_000
        assert dispatcher.drain() == 0 and len(server.requests) == 3  # a 400 is final
        assert "given up: HTTP 400" in caplog.text
        assert "s3cret-routing" not in caplog.text and "127.0.0.1" not in caplog.text
    finally:
        server.close()


def test_outage_then_recovery_and_restart_neither_lose_nor_repeat(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clock = Clock()
    yaml_text = (f"receivers: [{{name: hook, type: webhook, url: '{url}', hmac_secret_env: HOOK_KEY}}]\n"
                 "routes: [{receivers: [hook]}]")
    env = {"HOOK_KEY": "hmac-key"}
    store_path = str(tmp_path / "outbox.sqlite3")
    sinks, dispatcher = sinks_for(yaml_text, env, store=SqliteStore(store_path), clock=clock)
    notification = Notification("hook", "g", {"slo": "anomaly"}, (alert(),))
    sinks["hook"].send(notification)  # nobody listens: a network error, kept for retry
    assert dispatcher.outbox.pending_count == 1
    del sinks, dispatcher  # the process dies

    server = Receiver(port=port)
    try:
        sinks, dispatcher = sinks_for(yaml_text, env, store=SqliteStore(store_path), clock=clock)
        sinks["hook"].send(notification)  # the restarted alerter hands the same notification over again
        clock.now += 601
        dispatcher.drain()
        assert len(server.requests) == 1 and dispatcher.outbox.pending_count == 0
        path, headers, body = server.requests[0]
        expected = "sha256=" + hmac.new(b"hmac-key", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Advmon-Signature"], expected)
        assert orjson.loads(body)["alerts"][0]["dedup_key"] == alert().dedup_key
    finally:
        server.close()


def test_alertmanager_v4_and_opsgenie_payloads():
    server, clock = Receiver(), Clock()
    yaml_text = (f"receivers: [{{name: am, type: alertmanager, url: '{server.url}/hook'}},\n"
                 f"            {{name: og, type: opsgenie, url: '{server.url}', key_env: OG_KEY}}]\n"
                 "routes: [{receivers: [am, og]}]")
    sinks, dispatcher = sinks_for(yaml_text, {"OG_KEY": "genie"}, clock=clock)
    try:
        sinks["am"].send(Notification("am", "gk", {"slo": "anomaly"}, (alert(),)))
        sinks["og"].send(Notification("og", "gk", {}, (alert(),)))
        sinks["og"].send(Notification("og", "gk", {}, (alert("resolved"),)))
        (am_path, _, am_body), (og_path, og_headers, og_body), (close_path, _, _) = server.requests
        am = orjson.loads(am_body)
        assert am["version"] == "4" and am["status"] == "firing" and am["groupLabels"] == {"slo": "anomaly"}
        assert am["alerts"][0]["labels"]["severity"] == "page" and am["alerts"][0]["endsAt"].startswith("0001")
        assert og_path == "/v2/alerts" and og_headers["Authorization"] == "GenieKey genie"
        assert orjson.loads(og_body)["alias"] == alert().dedup_key and orjson.loads(og_body)["priority"] == "P1"
        assert close_path == f"/v2/alerts/{alert().dedup_key}/close?identifierType=alias"
    finally:
        server.close()


def test_missing_receiver_in_routes_is_a_rules_error():
    from monitor.spec.rules import RulesError

    with pytest.raises(RulesError, match="not declared: pager"):
        load_rules_text("routes: [{receivers: [pager]}]")


def test_a_slow_receiver_delays_no_other_receiver():
    slow, fast = Receiver(delay_s=2.0), Receiver()
    yaml_text = (f"receivers: [{{name: slow, type: webhook, url: '{slow.url}'}}, {{name: fast, type: webhook, "
                 f"url: '{fast.url}'}}]\nroutes: [{{receivers: [slow, fast]}}]")
    sinks, dispatcher = build_sinks(load_rules_text(yaml_text), Metrics(), outbox_store={}, environ={})
    sinks = {s.name: s for s in sinks}
    dispatcher.start(interval_s=0.5)
    try:
        started = time.monotonic()
        for receiver in ("slow", "fast"):
            sinks[receiver].send(Notification(receiver, "g", {}, (alert(),)))
        assert time.monotonic() - started < 0.5  # send only stores and wakes the receiver's thread
        while not fast.requests and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert fast.requests and time.monotonic() - started < 1.5 and not slow.requests
        while dispatcher.outbox.pending_count and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert len(slow.requests) == 1 and dispatcher.outbox.pending_count == 0
    finally:
        dispatcher.stop()
        slow.close(), fast.close()


def test_a_receiver_that_is_back_gets_its_backlog_at_once():
    server, clock = Receiver(), Clock()
    sinks, dispatcher = sinks_for(f"receivers: [{{name: hook, type: webhook, url: '{server.url}'}}]\n"
                                  "routes: [{receivers: [hook]}]", {}, clock=clock)
    try:
        server.down = True
        for minute in range(3):  # an outage of minutes: each retry waits longer (up to 10 min)
            sinks["hook"].send(Notification("hook", f"g{minute}", {}, (alert(),)))
            for _ in range(4):
                clock.now += 60
                dispatcher.drain()
        assert dispatcher.outbox.pending_count == 3 and not server.requests
        server.down = False
        sinks["hook"].send(Notification("hook", "new", {}, (alert("resolved"),)))  # accepted: the receiver is back
        assert dispatcher.drain() == 3  # the backlog is due now, not after its backoff
        assert dispatcher.outbox.pending_count == 0 and len(server.requests) == 4
    finally:
        server.close()
