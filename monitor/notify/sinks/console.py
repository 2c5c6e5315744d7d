"""Human-readable alert lines, for ``advmon demo`` and operators tailing a terminal.

>>> import io
>>> from monitor.contracts.alerts import Alert
>>> from monitor.notify.pipeline import Notification
>>> a = Alert.firing(rule="s/page", slo="s", severity="page", model="m", client_id="c", sli="x",
...                  first_event_ts=1795600500.0, fired_at=1795600800.0, summary="too many anomalies")
>>> out = io.StringIO(); ConsoleSink(out).send(Notification("stdout", "g", {}, (a,))); print(out.getvalue().strip())
2026-11-25T10:00:00Z FIRING   page   s model=m client=c ttd=300s  too many anomalies
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import TextIO

from monitor.notify.pipeline import Notification


def format_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConsoleSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, notification: Notification) -> None:
        for alert in notification.alerts:
            at = alert.resolved_at if alert.status == "resolved" and alert.resolved_at is not None else alert.fired_at
            ttd = "" if alert.time_to_detect_s is None else f" ttd={alert.time_to_detect_s:.0f}s"
            client = f" client={alert.client_id}" if alert.client_id else ""
            print(f"{format_ts(at)} {alert.status.upper():8} {alert.severity:6} {alert.slo} model={alert.model}"
                  f"{client}{ttd}  {alert.summary}", file=self.stream, flush=True)
