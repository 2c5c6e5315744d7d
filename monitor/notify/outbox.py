"""A durable outbox for notifications: every HTTP delivery is stored before it is tried, retried
with exponential backoff on 429, 5xx and network errors, and given up (with the reason kept) on
other 4xx answers or when it is too old.

Pure: the store is any mutable mapping (SQLite file in-process, a faust table in the alerter) and
time is a parameter. A delivery's id is stable (receiver + alert transition), so enqueueing the
same one twice, e.g. after a restart, keeps one.

>>> box = Outbox({}, base_delay_s=10, max_delay_s=60)
>>> box.enqueue(Delivery("d1", "pager", "POST", "http://x", {}, b"{}"), now=0.0)
True
>>> box.enqueue(Delivery("d1", "pager", "POST", "http://x", {}, b"{}"), now=1.0)   # already there
False
>>> [d.delivery_id for d in box.due(now=0.0)]
['d1']
>>> box.record("d1", Outcome.retry("HTTP 503"), now=0.0)   # next try after 5-10 s (backoff with jitter)
'pending'
>>> box.due(now=4.9), box.pending_count
([], 1)
>>> [d.delivery_id for d in box.due(now=10.0)]
['d1']
>>> box.record("d1", Outcome.sent(), now=10.0), box.pending_count
('sent', 0)

When a receiver accepts a delivery it is back: its other pending deliveries are due at once
instead of waiting out their backoff (after a long outage that can be minutes).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import MutableMapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One HTTP request to one receiver, ready to send (secrets already in the headers/URL)."""

    delivery_id: str
    receiver: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def to_dict(self) -> dict:
        return {"id": self.delivery_id, "receiver": self.receiver, "method": self.method, "url": self.url,
                "headers": self.headers, "body": base64.b64encode(self.body).decode()}

    @classmethod
    def from_dict(cls, doc: dict) -> Delivery:
        return cls(doc["id"], doc["receiver"], doc["method"], doc["url"], doc["headers"], base64.b64decode(doc["body"]))


@dataclass(frozen=True)
class Outcome:
    kind: str  # "sent" | "retry" | "give_up"
    reason: str = ""
    retry_after_s: float | None = None

    @classmethod
    def sent(cls) -> Outcome:
        return cls("sent")

    @classmethod
    def retry(cls, reason: str, retry_after_s: float | None = None) -> Outcome:
        return cls("retry", reason, retry_after_s)

    @classmethod
    def give_up(cls, reason: str) -> Outcome:
        return cls("give_up", reason)

    @classmethod
    def of_status(cls, status: int, retry_after_s: float | None = None) -> Outcome:
        """2xx sent; 408, 429 and 5xx retried; any other answer is final (fix the config, not the retry)."""
        if 200 <= status < 300:
            return cls.sent()
        if status in (408, 429) or status >= 500:
            return cls.retry(f"HTTP {status}", retry_after_s)
        return cls.give_up(f"HTTP {status}")


class Outbox:
    def __init__(self, store: MutableMapping, base_delay_s: float = 5.0, max_delay_s: float = 600.0,
                 max_age_s: float = 24 * 3600.0, keep_done: int = 10_000) -> None:
        self.store = store
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_age_s = max_age_s
        self.keep_done = keep_done
        # In-memory indexes over the store (read once): what is pending, and finished ids oldest first.
        self._pending: dict[str, tuple[float, str]] = {}  # id -> (next try, receiver)
        self._done: dict[str, float] = {}
        for key, entry in sorted(store.items(), key=lambda item: item[1]["created"]):
            if entry["status"] == "pending":
                self._pending[key] = (entry["next"], entry["delivery"]["receiver"])
            else:
                self._done[key] = entry["created"]

    def enqueue(self, delivery: Delivery, now: float) -> bool:
        """Store a delivery to try now; False if the same delivery id is already known."""
        if delivery.delivery_id in self.store:
            return False
        self.store[delivery.delivery_id] = {"delivery": delivery.to_dict(), "status": "pending", "attempts": 0,
                                            "created": now, "next": now, "reason": ""}
        self._pending[delivery.delivery_id] = (now, delivery.receiver)
        return True

    def due(self, now: float, limit: int = 100, receiver: str | None = None) -> list[Delivery]:
        """Pending deliveries whose time has come (of one receiver, or all), earliest first."""
        entries = sorted((at, k) for k, (at, to) in self._pending.items()
                         if at <= now and (receiver is None or to == receiver))
        return [Delivery.from_dict(self.store[k]["delivery"]) for _, k in entries[:limit]]

    def record(self, delivery_id: str, outcome: Outcome, now: float) -> str:
        """Apply an attempt's outcome; returns the new status (pending, sent or failed)."""
        entry = dict(self.store[delivery_id])
        entry["attempts"] += 1
        entry["reason"] = outcome.reason
        if outcome.kind == "sent":
            entry["status"] = "sent"
        elif outcome.kind == "give_up" or now - entry["created"] >= self.max_age_s:
            entry["status"] = "failed"
            if outcome.kind == "retry":
                entry["reason"] = f"{outcome.reason}; gave up after {entry['attempts']} attempts"
        else:
            entry["next"] = now + self._delay(delivery_id, entry["attempts"], outcome.retry_after_s)
        self.store[delivery_id] = entry
        receiver = entry["delivery"]["receiver"]
        if entry["status"] == "pending":
            self._pending[delivery_id] = (entry["next"], receiver)
        else:
            self._pending.pop(delivery_id, None)
            self._done[delivery_id] = entry["created"]
            self._forget_old_done()
        if entry["status"] == "sent":
            self._receiver_is_back(receiver, now)
        return entry["status"]

    def _receiver_is_back(self, receiver: str, now: float) -> None:
        for key, (at, to) in list(self._pending.items()):
            if to == receiver and at > now:
                entry = dict(self.store[key])
                entry["next"] = now
                self.store[key] = entry
                self._pending[key] = (now, to)

    def status(self, delivery_id: str) -> str | None:
        entry = self.store.get(delivery_id)
        return None if entry is None else entry["status"]

    def reason(self, delivery_id: str) -> str:
        return self.store[delivery_id]["reason"]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def _delay(self, delivery_id: str, attempts: int, retry_after_s: float | None) -> float:
        """Exponential backoff with a per-delivery jitter (stable, so retries of many deliveries spread)."""
        jitter = 0.5 + int(hashlib.sha256(f"{delivery_id}{attempts}".encode()).hexdigest()[:4], 16) / 0xFFFF / 2
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempts - 1)) * jitter
        return max(delay, retry_after_s or 0.0)

    def _forget_old_done(self) -> None:
        """Finished deliveries are kept (to refuse duplicates) up to ``keep_done``, oldest dropped first."""
        while len(self._done) > self.keep_done:
            key = next(iter(self._done))
            del self._done[key]
            self.store.pop(key, None)
