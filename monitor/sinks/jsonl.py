"""Alerts in the contract's JSON form, one per line, appended to a file (``advmon replay --alerts-out``)."""

from __future__ import annotations

from collections.abc import Iterable

from monitor.alerts import Alert
from monitor.pipeline import Notification


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: str, append: bool = False) -> None:
        self.path = path
        self._handle = open(path, "ab" if append else "wb")

    def write(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self._handle.write(alert.to_json() + b"\n")
        self._handle.flush()

    def send(self, notification: Notification) -> None:
        self.write(notification.alerts)

    def close(self) -> None:
        self._handle.close()
