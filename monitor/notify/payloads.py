"""HTTP requests for each receiver type, built from a notification (pure: no I/O, secrets passed in).

PagerDuty Events API v2 and Opsgenie get one request per alert transition (trigger/resolve keyed by
``dedup_key`` / ``alias``, so a repeat is harmless); Alertmanager's API (``alertmanager-api``: the alerts of a
group posted to ``/api/v2/alerts`` of every instance, as Prometheus posts them), Alertmanager-style webhooks
(payload version 4), Slack-style webhooks and plain webhooks get one request per notification group.

>>> from monitor.contracts.alerts import Alert
>>> from monitor.notify.pipeline import Notification
>>> from monitor.spec.rules import Receiver
>>> a = Alert.firing(rule="anomaly/page", slo="anomaly", severity="page", model="m", client_id="c", sli="x",
...                  fired_at=1795600800.0, summary="too many anomalies")
>>> pd = Receiver(name="pager", type="pagerduty", key_env="PD_KEY")
>>> [d] = build_deliveries(pd, Notification("pager", "g1", {"slo": "anomaly"}, (a,)), Secrets(key="R0UT1NG"))
>>> body = orjson.loads(d.body)
>>> d.url, body["event_action"], body["dedup_key"] == a.dedup_key, body["payload"]["severity"]
('https://events.pagerduty.com/v2/enqueue', 'trigger', True, 'critical')
>>> [r] = build_deliveries(pd, Notification("pager", "g1", {}, (a.resolve(at=1795601400.0),)), Secrets(key="R0UT1NG"))
>>> orjson.loads(r.body)["event_action"], r.delivery_id != d.delivery_id
('resolve', True)
>>> am = Receiver(name="am", type="alertmanager-api", url="http://am-0:9093,http://am-1:9093")
>>> deliveries = build_deliveries(am, Notification("am", "g1", {}, (a,), valid_until=1795601760.0), Secrets())
>>> [(d.url, orjson.loads(d.body)[0]["labels"]["alertname"]) for d in deliveries]
[('http://am-0:9093/api/v2/alerts', 'AdvmonAnomalyPage'), ('http://am-1:9093/api/v2/alerts', 'AdvmonAnomalyPage')]
>>> orjson.loads(deliveries[0].body)[0]["endsAt"]   # four repeat intervals: re-posted before then while it fires
'2026-11-25T10:16:00.000Z'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

import orjson

from monitor.contracts.alerts import Alert
from monitor.notify.outbox import Delivery
from monitor.notify.pipeline import Notification
from monitor.spec.rules import Receiver

SIGNATURE_HEADER = "X-Advmon-Signature"
_JSON = {"Content-Type": "application/json", "User-Agent": "advmon"}


@dataclass(frozen=True)
class Secrets:
    """A receiver's secrets, read from the environment by the caller; ``repr`` never shows them."""

    key: str | None = None
    url: str | None = None
    hmac_secret: str | None = None

    def __repr__(self) -> str:
        return "Secrets(***)"


def iso(ts: float | None) -> str:
    if ts is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC of the body>``, as GitHub-style webhooks sign; receivers compare in constant time."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def build_deliveries(receiver: Receiver, notification: Notification, secrets: Secrets) -> list[Delivery]:
    url = secrets.url or receiver.default_url
    builder = _BUILDERS[receiver.type]
    deliveries = builder(receiver, notification, secrets, url)
    if notification.reminder_at is not None:  # a reminder is a delivery of its own, not a duplicate
        suffix = f"@{notification.reminder_at:.0f}"
        deliveries = [Delivery(d.delivery_id + suffix, d.receiver, d.method, d.url, d.headers, d.body)
                      for d in deliveries]
    if secrets.hmac_secret:
        deliveries = [Delivery(d.delivery_id, d.receiver, d.method, d.url,
                               {**d.headers, SIGNATURE_HEADER: sign(d.body, secrets.hmac_secret)}, d.body)
                      for d in deliveries]
    return deliveries


def _details(alert: Alert) -> dict:
    return {"rule": alert.rule, "slo": alert.slo, "sli": alert.sli, "model": alert.model,
            "client_id": alert.client_id, "objective": alert.objective, "burn_rates": alert.burn_rates,
            "first_event_ts": iso(alert.first_event_ts) if alert.first_event_ts else None,
            "time_to_detect_s": alert.time_to_detect_s, "fingerprints": alert.fingerprints,
            "sample_event_ids": alert.sample_event_ids, "runbook_url": alert.runbook_url}


def _pagerduty(receiver, notification, secrets, url) -> list[Delivery]:
    out = []
    for alert in notification.alerts:
        body = {"routing_key": secrets.key, "dedup_key": alert.dedup_key,
                "event_action": "trigger" if alert.status == "firing" else "resolve"}
        if alert.status == "firing":
            body["payload"] = {
                "summary": alert.summary[:1024], "source": f"advmon/{alert.model}",
                "severity": "critical" if alert.severity == "page" else "warning", "timestamp": iso(alert.fired_at),
                "component": alert.model, "group": alert.slo, "class": alert.sli, "custom_details": _details(alert)}
            if alert.runbook_url.startswith("http"):
                body["links"] = [{"href": alert.runbook_url, "text": "runbook"}]
        out.append(Delivery(f"{receiver.name}:{alert.alert_id}", receiver.name, "POST", url, dict(_JSON),
                            orjson.dumps(body)))
    return out


def _opsgenie(receiver, notification, secrets, url) -> list[Delivery]:
    headers = {**_JSON, "Authorization": f"GenieKey {secrets.key}"}
    out = []
    for alert in notification.alerts:
        if alert.status == "firing":
            target = f"{url.rstrip('/')}/v2/alerts"
            body = {"message": alert.summary[:130], "alias": alert.dedup_key, "description": alert.summary[:15000],
                    "priority": "P1" if alert.severity == "page" else "P3", "source": "advmon",
                    "tags": [alert.slo, alert.model, alert.severity], "entity": alert.model,
                    "details": {k: str(v) for k, v in _details(alert).items() if v not in (None, [], {})}}
        else:
            target = f"{url.rstrip('/')}/v2/alerts/{quote(alert.dedup_key)}/close?identifierType=alias"
            body = {"source": "advmon", "note": alert.summary[:25000]}
        out.append(Delivery(f"{receiver.name}:{alert.alert_id}", receiver.name, "POST", target, dict(headers),
                            orjson.dumps(body)))
    return out


def _group_id(receiver: Receiver, notification: Notification) -> str:
    ids = "|".join(sorted(a.alert_id for a in notification.alerts))
    return f"{receiver.name}:{notification.group_key}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"


def alertmanager_labels(alert: Alert) -> dict[str, str]:
    """What Alertmanager routes, groups, silences and inhibits on: ``alertname`` (as the rendered Prometheus
    rules name it), ``severity``, ``slo``, ``model``, the rule and SLI, and ``client_id`` where there is one."""
    return {"alertname": alert.alertname, **{k: v for k, v in alert.labels.items() if v}}


def alertmanager_annotations(alert: Alert) -> dict[str, str]:
    """Strings for templates: the summary, the runbook, and the evidence and burn rates as JSON."""
    notes = {"summary": alert.summary, "runbook_url": alert.runbook_url,
             "evidence": orjson.dumps(alert.evidence).decode() if alert.evidence else "",
             "burn_rates": orjson.dumps(alert.burn_rates).decode() if alert.burn_rates else "",
             "first_event": iso(alert.first_event_ts) if alert.first_event_ts else "",
             "time_to_detect_s": f"{alert.time_to_detect_s:.0f}" if alert.time_to_detect_s is not None else "",
             "sample_event_ids": ",".join(alert.sample_event_ids), "dedup_key": alert.dedup_key}
    return {k: v for k, v in notes.items() if v}


def generator_url(receiver: Receiver, alert: Alert) -> str:
    """The on-call dashboard of the alert's model in Grafana, where the receiver names Grafana."""
    if not receiver.grafana_url:
        return ""
    return f"{receiver.grafana_url.rstrip('/')}/d/advmon-oncall/?var-model={quote(alert.model, safe='')}"


def _alertmanager_api(receiver, notification, secrets, url) -> list[Delivery]:
    """Alertmanager's ``POST /api/v2/alerts``: a firing alert holds until ``endsAt`` (re-posted before then while
    it fires), a resolved one ends when it resolved; every instance of an HA cluster gets every alert."""
    alerts = []
    for a in notification.alerts:
        ends = a.resolved_at if a.status == "resolved" else notification.valid_until
        posted = {"labels": alertmanager_labels(a), "annotations": alertmanager_annotations(a),
                  "startsAt": iso(a.fired_at)}
        if ends is not None:
            posted["endsAt"] = iso(ends)
        if receiver.grafana_url:
            posted["generatorURL"] = generator_url(receiver, a)
        alerts.append(posted)
    headers = dict(_JSON) if not secrets.key else {**_JSON, "Authorization": f"Bearer {secrets.key}"}
    group = _group_id(receiver, notification)
    body = orjson.dumps(alerts)
    return [Delivery(f"{group}#{i}", receiver.name, "POST", f"{base.rstrip('/')}/api/v2/alerts", dict(headers), body)
            for i, base in enumerate(url.split(","))]


def _alertmanager(receiver, notification, secrets, url) -> list[Delivery]:
    """Alertmanager's webhook payload, version 4."""
    alerts = [{"status": a.status, "labels": alertmanager_labels(a), "annotations": alertmanager_annotations(a),
               "startsAt": iso(a.fired_at), "endsAt": iso(a.resolved_at), "generatorURL": generator_url(receiver, a),
               "fingerprint": a.dedup_key[:16]} for a in notification.alerts]
    body = {"version": "4", "groupKey": notification.group_key, "truncatedAlerts": notification.truncated,
            "status": "firing" if any(a.status == "firing" for a in notification.alerts) else "resolved",
            "receiver": receiver.name, "groupLabels": notification.group_labels,
            "commonLabels": _common([x["labels"] for x in alerts]),
            "commonAnnotations": _common([x["annotations"] for x in alerts]),
            "externalURL": receiver.grafana_url or "", "alerts": alerts}
    return [Delivery(_group_id(receiver, notification), receiver.name, "POST", url, dict(_JSON), orjson.dumps(body))]


def _common(mappings: list[dict[str, str]]) -> dict[str, str]:
    """The entries every mapping shares (Alertmanager's ``commonLabels`` / ``commonAnnotations``)."""
    return dict(set.intersection(*(set(m.items()) for m in mappings))) if mappings else {}


def _slack(receiver, notification, secrets, url) -> list[Delivery]:
    lines = []
    for a in notification.alerts:
        icon = ":rotating_light:" if a.status == "firing" else ":white_check_mark:"
        who = f" client `{a.client_id}`" if a.client_id else ""
        lines.append(f"{icon} *{a.status.upper()}* {a.severity} `{a.slo}` model `{a.model}`{who}: {a.summary}")
    body = {"text": "\n".join(lines)}
    return [Delivery(_group_id(receiver, notification), receiver.name, "POST", url, dict(_JSON), orjson.dumps(body))]


def _webhook(receiver, notification, secrets, url) -> list[Delivery]:
    """The alert contract itself, grouped."""
    body = {"receiver": receiver.name, "group_key": notification.group_key, "group_labels": notification.group_labels,
            "alerts": [a.model_dump() for a in notification.alerts]}
    return [Delivery(_group_id(receiver, notification), receiver.name, "POST", url, dict(_JSON), orjson.dumps(body))]


#: A Delivery method: the ticket flow (search, then create, update or close) of monitor.notify.sinks.tickets.
TICKET = "TICKET"


def ticket_label(alert: Alert) -> str:
    """The label that finds an alert's ticket again: stable from trigger to resolve, across incidents."""
    return f"advmon-{alert.dedup_key[:12]}"


def _ticket(receiver, notification, secrets, url) -> list[Delivery]:
    """One ticket per SLO key, found again by its label: created or reopened on firing, closed on resolve."""
    auth = _ticket_auth(receiver.type, secrets.key or "")
    out = []
    for alert in notification.alerts:
        who = f" client {alert.client_id}" if alert.client_id else ""
        spec = {"kind": receiver.type, "repo": receiver.repo, "project": receiver.project,
                "issue_type": receiver.issue_type, "resolve_transition": receiver.resolve_transition,
                "reopen_transition": receiver.reopen_transition, "label": ticket_label(alert),
                "status": alert.status, "severity": alert.severity,
                "title": f"[advmon] {alert.slo}: model {alert.model}{who}",
                "text": _ticket_text(alert)}
        out.append(Delivery(f"{receiver.name}:{alert.alert_id}", receiver.name, TICKET, url,
                            {**_JSON, "Authorization": auth, "Accept": "application/json"}, orjson.dumps(spec)))
    return out


def _ticket_auth(kind: str, key: str) -> str:
    """GitHub: a token. Jira Cloud: ``email:api-token`` (Basic); Jira Data Center: a personal access token."""
    if kind == "jira" and ":" in key:
        return "Basic " + base64.b64encode(key.encode()).decode()
    return f"Bearer {key}"


def _ticket_text(alert: Alert) -> str:
    at = alert.resolved_at if alert.status == "resolved" else alert.fired_at
    lines = [f"**{alert.status.upper()}** at {iso(at)} ({alert.severity}): {alert.summary}", ""]
    lines += [f"- {k}: {v}" for k, v in _details(alert).items() if v not in (None, [], {}, "")]
    return "\n".join(lines)


_BUILDERS = {"alertmanager-api": _alertmanager_api, "pagerduty": _pagerduty, "opsgenie": _opsgenie,
             "alertmanager": _alertmanager, "slack": _slack,
             "webhook": _webhook, "github": _ticket, "jira": _ticket}
