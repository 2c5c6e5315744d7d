"""HTTP delivery: receivers' sinks put requests in the durable outbox; a dispatcher sends what is due.

``HttpSink.send`` only builds and stores the requests; the :class:`Dispatcher` sends due deliveries
and records each outcome in the outbox (retry with backoff on 429/5xx/network errors, give up on
other 4xx). Started, it runs one sender thread per receiver, woken by each submit: ``send`` returns
at once, and a slow or dead receiver delays nobody else's notifications. Not started (tests, tools),
``send`` delivers synchronously. Logs name the receiver and the reason, never a URL, header or body
(they may carry secrets).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from monitor.notify.outbox import Delivery, Outbox, Outcome
from monitor.notify.payloads import TICKET, Secrets, build_deliveries
from monitor.notify.pipeline import Notification
from monitor.notify.sinks.tickets import send_ticket
from monitor.spec.rules import Receiver
from monitor.telemetry.metrics import Metrics

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
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics,
        timeouts: Mapping[str, float],
        sender: Callable[[Delivery, float], Outcome] = send_http,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.timeouts = dict(timeouts)  # receiver name -> request timeout
        self.sender = sender
        self.clock = clock
        self._lock = threading.Lock()  # guards the outbox; never held while a request is in flight
        self._stop = threading.Event()
        self._wake = {receiver: threading.Event() for receiver in self.timeouts}
        self._threads: list[threading.Thread] = []

    def submit(self, deliveries: Sequence[Delivery]) -> None:
        now = self.clock()
        with self._lock:
            for delivery in deliveries:
                self.outbox.enqueue(delivery, now)
        if not self._threads:
            self.drain()
            return
        for receiver in {d.receiver for d in deliveries}:
            self._wake[receiver].set()

    def drain(self, receiver: str | None = None) -> int:
        """Send every due delivery (of one receiver, or all) once; returns how many were tried."""
        with self._lock:
            due = self.outbox.due(self.clock(), receiver=receiver)
        for delivery in due:
            outcome = self.sender(delivery, self.timeouts.get(delivery.receiver, 10.0))
            with self._lock:
                status = self.outbox.record(delivery.delivery_id, outcome, self.clock())
                self.metrics.outbox_pending.set(self.outbox.pending_count)
            self._report(delivery, outcome, status)
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
        """Send and retry in the background, one thread per receiver, until :meth:`stop`."""
        def loop(receiver: str) -> None:
            wake = self._wake[receiver]
            while not self._stop.is_set():
                wake.wait(interval_s)
                wake.clear()
                try:
                    while self.drain(receiver) and not self._stop.is_set():
                        pass  # more may have come due while sending
                except Exception:  # the retry loop must outlive any one failure
                    log.exception("outbox drain for %s failed", receiver)

        self._threads = [threading.Thread(target=loop, args=(receiver,), name=f"advmon-outbox-{receiver}", daemon=True)
                         for receiver in self._wake]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join(timeout=30)


class HttpSink:
    """A configured receiver: notifications become deliveries in the outbox."""

    def __init__(self, receiver: Receiver, secrets: Secrets, dispatcher: Dispatcher) -> None:
        self.name = receiver.name
        self.receiver = receiver
        self._secrets = secrets
        self.dispatcher = dispatcher

    def send(self, notification: Notification) -> None:
        self.dispatcher.submit(build_deliveries(self.receiver, notification, self._secrets))
