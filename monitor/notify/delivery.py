"""Hand a notification to its receiver's sink: the last step of the notification path, shared by runtimes.

>>> from monitor.contracts.alerts import Alert
>>> from monitor.notify.pipeline import Notification
>>> a = Alert.firing(rule="s/page", slo="s", severity="page", model="m", sli="x", fired_at=60.0, summary="s")
>>> m = Metrics()
>>> deliver({}, m, Notification("pager", "g", {}, (a,)))
>>> m.registry.get_sample_value("advmon_sink_deliveries_total", {"receiver": "unknown", "outcome": "no_receiver"})
1.0
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from monitor.notify.pipeline import Notification
from monitor.notify.sinks import Sink
from monitor.telemetry.metrics import Metrics

log = logging.getLogger("advmon.notify")


def deliver(sinks: Mapping[str, Sink], metrics: Metrics, notification: Notification) -> None:
    """Hand a notification to its receiver's sink; a failing sink is logged and counted, never fatal."""
    sink = sinks.get(notification.receiver)
    if sink is None:
        log.error("route names receiver %r, which is not configured; alerts: %s", notification.receiver,
                  [a.dedup_key for a in notification.alerts])
        metrics.deliveries.labels(receiver="unknown", outcome="no_receiver").inc()
        return
    try:
        sink.send(notification)
    except Exception:  # a sink failure must not stop detection
        log.exception("delivery to %s failed", notification.receiver)
        metrics.deliveries.labels(receiver=notification.receiver, outcome="failed").inc()
    else:
        metrics.deliveries.labels(receiver=notification.receiver, outcome="sent").inc()
