"""The notification path after evaluation, as small stages in Alertmanager's order:
inhibit -> silence -> route -> group -> dedupe. Delivery (sinks, retries) belongs to the runtime.

>>> from monitor.contracts.alerts import Alert
>>> from monitor.spec.rules import Route
>>> def alert(sev, client="c"):
...     return Alert.firing(rule=f"s/{sev}", slo="s", severity=sev, model="m", client_id=client, sli="x",
...                         fired_at=60.0, summary="s")
>>> p = Pipeline([Route(match={"severity": "page"}, receivers=("pager",)), Route(receivers=("tickets",))])
>>> [(n.receiver, len(n.alerts)) for n in p.process([alert("page"), alert("ticket")], now=60.0)]
[('pager', 1)]
>>> p.process([alert("page")], now=120.0)   # same alert again within repeat_interval: deduplicated
[]
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from monitor.contracts.alerts import Alert
from monitor.spec.rules import Route
from monitor.spec.silences import MaintenanceWindow, Silence, silenced


@dataclass(frozen=True)
class Notification:
    """What one receiver gets: a group of alerts sharing the route's ``group_by`` labels."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]
    reminder_at: float | None = None  # set when this repeats a notification already sent (repeat_interval)


def inhibit(alerts: Sequence[Alert], firing: Sequence[Alert]) -> list[Alert]:
    """Drop ticket notifications for a key whose page alert is firing (fast tiers inhibit slow ones)."""
    paged = {(a.slo, a.model, a.client_id) for a in (*firing, *alerts) if a.severity == "page" and a.status == "firing"}
    return [a for a in alerts if not (a.severity == "ticket" and (a.slo, a.model, a.client_id) in paged)]


def route(alert: Alert, routes: Sequence[Route]) -> list[Route]:
    """The routes whose ``match`` labels all equal the alert's; the first match ends the walk unless ``continue``."""
    labels = alert.labels
    matched = []
    for candidate in routes:
        if all(labels.get(k) == v for k, v in candidate.match.items()):
            matched.append(candidate)
            if not candidate.continue_:
                break
    return matched


class Pipeline:
    def __init__(self, routes: Sequence[Route], silences: Sequence[Silence | MaintenanceWindow] = ()) -> None:
        self.routes = list(routes)
        self.silences = list(silences)
        self._last_sent: dict[tuple[str, str], tuple[str, float]] = {}  # (receiver, dedup_key) -> (status, at)

    def process(self, alerts: Sequence[Alert], now: float, firing: Sequence[Alert] = ()) -> list[Notification]:
        groups: dict[tuple[str, str], list[Alert]] = defaultdict(list)
        labels_of: dict[tuple[str, str], dict[str, str]] = {}
        repeats: set[tuple[str, str]] = set()
        for alert in silenced(inhibit(alerts, firing), self.silences):
            for matched in route(alert, self.routes):
                for receiver in matched.receivers:
                    due = self._due(receiver, alert, now, matched.repeat_interval)
                    if due is None:
                        continue
                    group_labels = {k: alert.labels.get(k, "") for k in matched.group_by}
                    key = (receiver, _group_key(receiver, group_labels))
                    groups[key].append(alert)
                    labels_of[key] = group_labels
                    if due == "repeat":
                        repeats.add(key)
        return [Notification(r, g, labels_of[(r, g)], tuple(a), now if (r, g) in repeats else None)
                for (r, g), a in groups.items()]

    def remember(self, alerts: Sequence[Alert]) -> None:
        """Alerts already announced (by a process before a restart): repeats count from their firing."""
        for alert in alerts:
            for matched in route(alert, self.routes):
                for receiver in matched.receivers:
                    self._last_sent.setdefault((receiver, alert.dedup_key), (alert.status, alert.fired_at))

    def _due(self, receiver: str, alert: Alert, now: float, repeat_interval: float) -> str | None:
        """Dedupe: a status is sent once per receiver ("new"), a still-firing alert again after
        ``repeat_interval`` ("repeat"); None when nothing is due."""
        key = (receiver, alert.dedup_key)
        previous = self._last_sent.get(key)
        if previous is not None and previous[0] == alert.status and now - previous[1] < repeat_interval:
            return None
        if previous is None and alert.status == "resolved":
            return None  # never announced as firing here: nothing to resolve
        self._last_sent[key] = (alert.status, now)
        return "repeat" if previous is not None and previous[0] == alert.status else "new"


def _group_key(receiver: str, labels: dict[str, str]) -> str:
    text = receiver + "|" + "|".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
