"""HTTP delivery: receivers' sinks put requests in the durable outbox; a dispatcher sends what is due.

``HttpSink.send`` only builds and stores the requests (then tries them at once); the
:class:`Dispatcher` sends due deliveries, records each outcome in the outbox (retry with backoff on
429/5xx/network errors, give up on other 4xx) and runs a background thread for the retries. Logs
name the receiver and the reason, never a URL, header or body (they may carry secrets).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from monitor.metrics import Metrics
from monitor.outbox import Delivery, Outbox, Outcome
from monitor.payloads import TICKET, Secrets, build_deliveries
from monitor.pipeline import Notification
from monitor.rules import Receiver
from monitor.sinks.tickets import send_ticket

log = logging.getLogger("advmon.delivery")


def send_http(delivery: Delivery, timeout_s: float) -> Outcome:
    if delivery.method == TICKET:
        return send_ticket(delivery, timeout_s)
    request = urllib.request.Request(delivery.url, data=delivery.body, method=delivery.method,
                                     headers=delivery.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Outcome.of_status(response.status)
    except urllib.error.HTTPError as exc:
        return Outcome.of_status(exc.code, _retry_after(exc.headers.get("Retry-After")))
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome.retry(f"network error: {type(reason).__name__}")


def _retry_after(value: str | None) -> float | None:
    try:
        return min(3600.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class Dispatcher:
    def __init__(self, outbox: Outbox, metrics: Metrics, timeouts: Mapping[str, float],
                 sender: Callable[[Delivery, float], Outcome] = send_http, clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.timeouts = dict(timeouts)
        self.sender = sender
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, deliveries: Sequence[Delivery]) -> None:
        now = self.clock()
        with self._lock:
            for delivery in deliveries:
                self.outbox.enqueue(delivery, now)
        self.drain()

    def drain(self) -> int:
        """Send every due delivery once; returns how many were tried."""
        with self._lock:
            due = self.outbox.due(self.clock())
            for delivery in due:
                outcome = self.sender(delivery, self.timeouts.get(delivery.receiver, 10.0))
                status = self.outbox.record(delivery.delivery_id, outcome, self.clock())
                self._report(delivery, outcome, status)
            self.metrics.outbox_pending.set(self.outbox.pending_count)
        return len(due)

    def _report(self, delivery: Delivery, outcome: Outcome, status: str) -> None:
        label = {"sent": "sent", "pending": "retry", "failed": "failed"}[status]
        self.metrics.deliveries.labels(receiver=delivery.receiver, outcome=label).inc()
        if status == "failed":
            log.error("delivery %s to %s given up: %s", delivery.delivery_id, delivery.receiver,
                      self.outbox.reason(delivery.delivery_id))
        elif status == "pending":
            log.warning("delivery %s to %s will be retried: %s", delivery.delivery_id, delivery.receiver,
                        outcome.reason)

    def start(self, interval_s: float = 2.0) -> Dispatcher:
        """Retry in the background until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.drain()
                except Exception:  # the retry loop must outlive any one failure
                    log.exception("outbox drain failed")

        self._thread = threading.Thread(target=loop, name="advmon-outbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class HttpSink:
    """A configured receiver: notifications become deliveries in the outbox."""

    def __init__(self, receiver: Receiver, secrets: Secrets, dispatcher: Dispatcher) -> None:
        self.name = receiver.name
        self.receiver = receiver
        self._secrets = secrets
        self.dispatcher = dispatcher

    def send(self, notification: Notification) -> None:
        self.dispatcher.submit(build_deliveries(self.receiver, notification, self._secrets))
