"""Alerts in the contract's JSON form, one per line, appended to a file (``--alerts-out``).

In append mode the sink is idempotent: it reads the ``alert_id``s already in the file and writes
each transition once, so a daemon restarted after a crash does not repeat lines.

>>> import tempfile, os
>>> from monitor.contracts.alerts import Alert
>>> a = Alert.firing(rule="r", slo="s", severity="page", model="m", sli="x", fired_at=60.0, summary="s")
>>> path = os.path.join(tempfile.mkdtemp(), "alerts.jsonl")
>>> JsonlSink(path, append=True).write([a]); JsonlSink(path, append=True).write([a, a.resolve(at=120.0)])
>>> len(open(path).readlines())
2
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from monitor.contracts.alerts import Alert
from monitor.notify.pipeline import Notification


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: str, append: bool = False) -> None:
        self.path = path
        self._written: set[str] = _alert_ids(path) if append else set()
        self._handle = open(path, "ab" if append else "wb")

    def write(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            if alert.alert_id in self._written:
                continue
            self._written.add(alert.alert_id)
            self._handle.write(alert.to_json() + b"\n")
        self._handle.flush()

    def send(self, notification: Notification) -> None:
        self.write(notification.alerts)

    def close(self) -> None:
        self._handle.close()


def _alert_ids(path: str) -> set[str]:
    try:
        with open(path, "rb") as handle:
            return {orjson.loads(line).get("alert_id", "") for line in handle if line.strip()}
    except FileNotFoundError:
        return set()
