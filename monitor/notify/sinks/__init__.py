"""Alert sinks: each only ``send``s a notification; routing, dedupe and retries happen before them."""

from __future__ import annotations

from typing import Protocol

from monitor.notify.pipeline import Notification


class Sink(Protocol):
    name: str

    def send(self, notification: Notification) -> None: ...
