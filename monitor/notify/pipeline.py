"""The notification path after evaluation, as small stages in Alertmanager's order:
inhibit -> silence -> route -> group (group_wait, group_interval, repeat_interval) -> dedupe.
Delivery (sinks, retries) belongs to the runtime. Time is event time, passed in.

Alert transitions are *accepted* into groups (one per receiver and ``group_by`` labels); :meth:`Pipeline.flush`
returns the notifications due: a new group's first after ``group_wait``, later changes at most every
``group_interval``, a reminder of what still fires after ``repeat_interval``. A notification lists at most
``max_alerts`` alerts, pages and the strongest evidence first, and counts the rest (``truncated``), so one
attack over a hundred keys is a few notifications, not a hundred.

Inhibition: a firing page mutes the ticket of the same SLO and key; a firing group alert (one naming many
keys) mutes the individual pages of its keys.

>>> from monitor.contracts.alerts import Alert
>>> from monitor.spec.rules import Route
>>> def alert(sev, client="c", at=60.0):
...     return Alert.firing(rule=f"s/{sev}", slo="s", severity=sev, model="m", client_id=client, sli="x",
...                         fired_at=at, summary="s")
>>> p = Pipeline([Route(match={"severity": "page"}, receivers=("pager",), group_wait=30),
...               Route(receivers=("tickets",))])
>>> p.process([alert("page"), alert("ticket")], now=60.0)   # the group waits 30 s for company
[]
>>> [(n.receiver, len(n.alerts)) for n in p.process([alert("page", "d", 80.0)], now=90.0)]
[('pager', 2)]
>>> p.process([alert("page")], now=120.0)   # the same transition again: deduplicated
[]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    truncated: int = 0  # alerts of the group not listed (over the route's max_alerts)
    #: Until when a receiver may hold the firing alerts without hearing again: four repeat intervals (the next
    #: reminder is due after one), as Prometheus sets ``endsAt`` on what it re-sends to Alertmanager.
    valid_until: float | None = None


def inhibit(alerts: Sequence[Alert], firing: Sequence[Alert]) -> list[Alert]:
    """Drop what a firing alert makes redundant: the ticket of a key whose page fires, and the page of a client
    that a firing group alert (one naming many keys) already names."""
    live = [a for a in (*firing, *alerts) if a.status == "firing"]
    paged = {(a.slo, a.model, a.client_id) for a in live if a.severity == "page"}
    grouped = {(a.model, key) for a in live if a.severity == "page" for key in a.evidence.get("keys", ())}
    return [a for a in alerts
            if not (a.severity == "ticket" and (a.slo, a.model, a.client_id) in paged)
            and not (a.severity == "page" and a.client_id and (a.model, a.client_id) in grouped)]


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


def priority(alert: Alert) -> tuple[int, float]:
    """Sort key, most important first: pages, then the strongest evidence (z, burn rate, keys named)."""
    statistics = alert.evidence.get("statistics", ())
    strength = max([s.get("z", 0.0) for s in statistics] + list(alert.burn_rates.values())
                   + [float(len(alert.evidence.get("keys", ())))] + [0.0])
    return (0 if alert.severity == "page" else 1, -strength)


@dataclass
class _Group:
    receiver: str
    key: str
    labels: dict[str, str]
    route: Route
    pending: dict[str, Alert] = field(default_factory=dict)  # dedup key -> transition not yet notified
    notified: dict[str, Alert] = field(default_factory=dict)  # dedup key -> last transition notified
    due: float | None = None  # when the pending transitions may go out
    last_sent: float | None = None

    def firing(self) -> list[Alert]:
        return [a for a in self.notified.values() if a.status == "firing"]

    def accept(self, alert: Alert, now: float) -> None:
        """Dedupe, then queue: a transition already notified is dropped; a firing alert that resolves before
        it was ever announced leaves nothing to say."""
        previous = self.notified.get(alert.dedup_key)
        if previous is not None and previous.status == alert.status and previous.alert_id == alert.alert_id:
            return
        if previous is not None and previous.status == alert.status == "resolved":
            return
        if alert.status == "resolved" and previous is None:
            self.pending.pop(alert.dedup_key, None)
            return
        self.pending[alert.dedup_key] = alert
        if self.due is None:
            r = self.route
            self.due = now + r.group_wait if self.last_sent is None else max(now, self.last_sent + r.group_interval)


class Pipeline:
    def __init__(self, routes: Sequence[Route], silences: Sequence[Silence | MaintenanceWindow] = ()) -> None:
        self.routes = list(routes)
        self.silences = list(silences)
        self._groups: dict[tuple[str, str], _Group] = {}

    def process(self, alerts: Sequence[Alert], now: float, firing: Sequence[Alert] = ()) -> list[Notification]:
        """Accept transitions, then return every notification due at ``now``."""
        self.accept(alerts, now, firing)
        return self.flush(now)

    def accept(self, alerts: Sequence[Alert], now: float, firing: Sequence[Alert] = ()) -> None:
        """Inhibit, silence and route transitions into their groups (``firing``: what fires now, for inhibition)."""
        for alert in silenced(inhibit(alerts, firing), self.silences):
            for matched in route(alert, self.routes):
                for receiver in matched.receivers:
                    self._group(receiver, matched, alert).accept(alert, now)

    def flush(self, now: float, final: bool = False) -> list[Notification]:
        """The notifications due at ``now``: waited groups' changes, and reminders of what still fires;
        ``final`` (the end of a replay) sends every waiting change at once and no reminders."""
        out = []
        for group in self._groups.values():
            if group.pending and (final or (group.due is not None and now >= group.due)):
                out.append(self._notify(group, list(group.pending.values()), now, reminder=False))
            elif (not final and not group.pending and group.firing() and group.last_sent is not None
                  and now - group.last_sent >= group.route.repeat_interval):
                out.append(self._notify(group, group.firing(), now, reminder=True))
        return out

    def pending(self) -> list[Alert]:
        """Transitions accepted but not yet notified (a daemon keeps them durable across restarts)."""
        return [a for g in self._groups.values() for a in g.pending.values()]

    def remember(self, alerts: Sequence[Alert]) -> None:
        """Alerts already announced (by a process before a restart): repeats count from their firing."""
        for alert in alerts:
            for matched in route(alert, self.routes):
                for receiver in matched.receivers:
                    group = self._group(receiver, matched, alert)
                    group.notified.setdefault(alert.dedup_key, alert)
                    group.last_sent = alert.fired_at if group.last_sent is None else group.last_sent

    def _group(self, receiver: str, matched: Route, alert: Alert) -> _Group:
        labels = {k: alert.labels.get(k, "") for k in matched.group_by}
        key = _group_key(receiver, labels)
        if (receiver, key) not in self._groups:
            self._groups[(receiver, key)] = _Group(receiver, key, labels, matched)
        return self._groups[(receiver, key)]

    def _notify(self, group: _Group, alerts: list[Alert], now: float, reminder: bool) -> Notification:
        alerts.sort(key=priority)
        listed = alerts[:group.route.max_alerts]
        for alert in alerts:
            group.notified[alert.dedup_key] = alert
        group.pending.clear()
        group.due = None
        group.last_sent = now
        return Notification(group.receiver, group.key, group.labels, tuple(listed), now if reminder else None,
                            len(alerts) - len(listed), valid_until=now + 4 * group.route.repeat_interval)


def _group_key(receiver: str, labels: dict[str, str]) -> str:
    text = receiver + "|" + "|".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
