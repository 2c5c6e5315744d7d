"""The ``alertmanager-api`` receiver against the real Alertmanager (Debian's prometheus-alertmanager) on loopback:
Alertmanager's own route delivers advmon's alerts to a loopback webhook, and a silence made with amtool mutes them."""

import shutil
import subprocess
import time
import urllib.request

import orjson
import pytest

from monitor.contracts.alerts import Alert
from monitor.notify.pipeline import Pipeline
from monitor.notify.sinks.registry import build_sinks
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics
from streams.broker import free_port
from tests.notify.sinks.test_http import Receiver

ALERTMANAGER_CONFIG = """\
route:
  receiver: hook
  group_by: [alertname, model]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}/hook
        send_resolved: true
"""


def binary(*names):
    for name in names:
        if shutil.which(name):
            return name
    pytest.fail(f"{names[0]} is not installed (Debian package prometheus-alertmanager; .ci/run installs it)")


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager (no cluster) routing everything to a loopback webhook; yields (its URL, the webhook)."""
    hook = Receiver()
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG.format(hook=hook.url))
    port = free_port()
    process = subprocess.Popen(
        [binary("prometheus-alertmanager", "alertmanager"), f"--config.file={config}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout_s=30, what="Alertmanager to start")
        yield url, hook
    finally:
        process.terminate()
        process.wait(timeout=30)
        hook.close()


def _ready(url):
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def am_alerts(url, **params):
    query = "&".join(f"{k}={str(v).lower()}" for k, v in params.items())
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as response:
        return orjson.loads(response.read())


def hooked(hook, status, model):
    """Alerts of ``model`` with ``status`` that Alertmanager's webhook notifications carried so far."""
    out = []
    for _, _, body in list(hook.requests):
        payload = orjson.loads(body)
        out += [a for a in payload["alerts"] if a["status"] == status and a["labels"].get("model") == model]
    return out


def standout(model, client, now):
    return Alert.firing(rule="client-standout", slo="client-standout", severity="page", model=model,
                        client_id=client, sli="margin_rank", first_event_ts=now - 90, fired_at=now - 30,
                        evidence={"statistics": [{"statistic": "margin_rank", "z": 7.1, "effect": 0.93}]},
                        summary=f"client {client} stands out", runbook_url="https://runbooks.example/standout")


def test_alerts_reach_alertmanager_route_and_an_amtool_silence_mutes_them(alertmanager):
    url, hook = alertmanager
    rules = load_rules_text(
        f"receivers: [{{name: am, type: alertmanager-api, url: '{url}', grafana_url: 'https://grafana.example'}}]\n"
        "routes: [{receivers: [am], group_wait: 0s, group_interval: 1m, repeat_interval: 1m, max_alerts: 500}]")
    sinks, dispatcher = build_sinks(rules, Metrics(), outbox_store={}, environ={})
    [sink] = [s for s in sinks if s.name == "am"]
    pipeline = Pipeline(rules.routes)
    now = time.time()
    fired = standout("digits", "key-1", now)
    for notification in pipeline.process([fired], now=now):
        sink.send(notification)
    assert dispatcher.outbox.pending_count == 0  # Alertmanager accepted the post

    [delivered] = wait_for(lambda: hooked(hook, "firing", "digits"), 30, "Alertmanager's notification")
    assert delivered["labels"] == {"alertname": "AdvmonClientStandoutPage", "rule": "client-standout",
                                   "slo": "client-standout", "severity": "page", "model": "digits",
                                   "client_id": "key-1", "sli": "margin_rank"}
    assert delivered["annotations"]["summary"] == "client key-1 stands out"
    assert delivered["annotations"]["runbook_url"] == "https://runbooks.example/standout"
    assert orjson.loads(delivered["annotations"]["evidence"])["statistics"][0]["z"] == 7.1
    assert delivered["generatorURL"] == "https://grafana.example/d/advmon-oncall/?var-model=digits"
    [held] = am_alerts(url, active=True)
    assert held["endsAt"].startswith(time.strftime("%Y-%m-%dT%H", time.gmtime(now + 240)))  # 4 x repeat_interval

    # A silence made by a person with amtool, while advmon runs: the next alert of that model is muted.
    silence = subprocess.run(
        [binary("amtool"), "silence", "add", "model=images", "--comment=maintenance", "--author=oncall",
         "--duration=1h", f"--alertmanager.url={url}"], capture_output=True, text=True, timeout=30)
    assert silence.returncode == 0, silence.stderr
    muted = standout("images", "key-2", now + 1)
    for notification in pipeline.process([muted], now=now + 1):
        sink.send(notification)
    assert dispatcher.outbox.pending_count == 0
    [suppressed] = wait_for(lambda: am_alerts(url, silenced=True, active=False, inhibited=False), 30,
                            "the silenced alert")
    assert suppressed["labels"]["model"] == "images" and suppressed["status"]["state"] == "suppressed"
    assert suppressed["status"]["silencedBy"] == [silence.stdout.strip()]

    # Resolving reaches the route too (send_resolved), and the silenced model never reached the webhook.
    for notification in pipeline.process([fired.resolve(at=time.time())], now=now + 62):
        sink.send(notification)
    wait_for(lambda: hooked(hook, "resolved", "digits"), 30, "the resolved notification")
    time.sleep(2)  # two of Alertmanager's group intervals
    assert not hooked(hook, "firing", "images")


def test_a_still_firing_alert_is_reposted_before_alertmanager_would_expire_it():
    rules = load_rules_text("receivers: [{name: am, type: alertmanager-api, url: 'http://127.0.0.1:9'}]\n"
                            "routes: [{receivers: [am], group_wait: 0s, repeat_interval: 1m}]")
    pipeline = Pipeline(rules.routes)
    alert = standout("digits", "key-1", 1_000.0)
    [first] = pipeline.process([alert], now=1_000.0)
    assert pipeline.flush(now=1_059.0) == []
    [again] = pipeline.flush(now=1_060.0)
    assert again.alerts == (alert,) and again.reminder_at == 1_060.0
    assert first.valid_until == 1_240.0 and again.valid_until == 1_300.0  # never lapses while advmon is alive
