"""The producer side: log inference records to ``inference-logs`` from a serving process, never blocking it.

``InferenceLogger`` (threads) and ``AsyncInferenceLogger`` (asyncio) put each record on a bounded queue and
return at once; a background sender batches them to Kafka keyed by ``client_id`` (one client's queries meet
in one partition), with ``acks=all`` and idempotence. When the queue is full (Kafka slow or down), the record
is dropped and counted rather than making the model wait; records that break the event contract are counted
as invalid and not sent (``stats`` says how many of each, and the first reason). Public API: ``monitor.client``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from monitor.contracts.events import validate_event
from monitor.intake.protocols import prediction_of
from streams.produce import client_key

log = logging.getLogger("advmon.client")
BOOTSTRAP_TIMEOUT_MS = 5000  # one connection attempt of the sender thread (kafka-python's default is 30 s)
Record = Mapping[str, Any] | bytes


def inference_record(client_id: str, model: str, output: Any, *, features: Sequence[float] | None = None,
                     text: str | None = None, embedding: Sequence[float] | None = None,
                     ground_truth: str | int | None = None, event_id: str | None = None, ts: float | None = None,
                     model_version: str | None = None, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One record of the event contract from what a serving handler has at hand: ``output`` is the model's
    answer for one input (probabilities, logits or a label: see ``monitor.intake.protocols.prediction_of``).

    >>> r = inference_record("key-1", "digits", [0.1, 0.9], features=[0.5, 0.25], event_id="e1", ts=1795600800.0)
    >>> r["prediction"], r["input"]
    ({'label': 1, 'confidence': 0.9, 'probs': [0.1, 0.9]}, {'features': [0.5, 0.25]})
    """
    record: dict[str, Any] = {"event_id": event_id or uuid.uuid4().hex, "ts": time.time() if ts is None else ts,
                              "client_id": client_id, "model": model, "prediction": prediction_of(_plain(output))}
    model_input = {k: _plain(v) for k, v in (("features", features), ("text", text), ("embedding", embedding))
                   if v is not None}
    if model_input:
        record["input"] = model_input
    for name, value in (("ground_truth", ground_truth), ("model_version", model_version)):
        if value is not None:
            record[name] = value
    if tags:
        record["tags"] = dict(tags)
    return record


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python lists and numbers."""
    return value.tolist() if hasattr(value, "tolist") else value


@dataclass(frozen=True)
class ClientStats:
    queued: int  # waiting to be sent
    sent: int  # acknowledged by the broker
    dropped: int  # refused because the queue was full (the serving path never waits)
    invalid: int  # not sent: they break the event contract
    failed: int  # the broker refused them after retries
    last_error: str = ""


class _Counts:
    def __init__(self) -> None:
        self.sent = self.dropped = self.invalid = self.failed = 0
        self.last_error = ""
        self.lock = threading.Lock()
        self._warned: set[str] = set()

    def add(self, field: str, n: int = 1, error: str = "") -> None:
        """Count; the first record of each kind of trouble is logged (the rest only counted)."""
        with self.lock:
            setattr(self, field, getattr(self, field) + n)
            self.last_error = error or self.last_error
            if field != "sent" and field not in self._warned:
                self._warned.add(field)
                log.warning("advmon client: a record %s%s (further ones are only counted in stats)",
                            {"dropped": "dropped: the queue is full", "invalid": "not sent",
                             "failed": "refused by Kafka"}[field], f": {error}" if error else "")


def encode(record: Record, validate: bool) -> tuple[bytes, bytes] | str:
    """(value, key) of a record, or why it cannot be sent."""
    value = record if isinstance(record, bytes) else orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
    if not validate:
        return value, client_key(value) or b""
    try:
        return value, validate_event(value).client_id.encode()
    except msgspec.MsgspecError as exc:
        return f"invalid event: {exc}"


class _QueuedLogger:
    """What both loggers share: validate, queue without waiting, count."""

    _queue: queue.Queue[tuple[bytes, bytes]] | asyncio.Queue[tuple[bytes, bytes]]

    def __init__(self, validate: bool) -> None:
        self.validate = validate
        self._counts = _Counts()

    def log(self, record: Record) -> bool:
        """Queue one record; False when it was dropped (queue full) or invalid. Never blocks or awaits."""
        encoded = encode(record, self.validate)
        if isinstance(encoded, str):
            self._counts.add("invalid", error=encoded)
            return False
        try:
            self._queue.put_nowait(encoded)
        except (queue.Full, asyncio.QueueFull):
            self._counts.add("dropped")
            return False
        return True

    @property
    def stats(self) -> ClientStats:
        c = self._counts
        return ClientStats(self._queue.qsize(), c.sent, c.dropped, c.invalid, c.failed, c.last_error)


class InferenceLogger(_QueuedLogger):
    """Thread-based: ``log()`` from any thread (a WSGI worker, a Flask or FastAPI sync handler).

    >>> logger = InferenceLogger("127.0.0.1:1", max_queue=2, start=False)   # nothing is sent until start()
    >>> [logger.log(inference_record("k", "m", 3, event_id=f"e{i}", ts=1.0)) for i in range(3)]
    [True, True, False]
    >>> logger.stats.dropped, logger.log({"client_id": "k"}), logger.stats.invalid
    (1, False, 1)
    """

    def __init__(self, bootstrap: str, topic: str = "inference-logs", max_queue: int = 10_000,
                 batch_size: int = 500, validate: bool = True, start: bool = True, **producer_options: Any) -> None:
        super().__init__(validate)
        self.bootstrap, self.topic, self.batch_size = bootstrap, topic, batch_size
        self.producer_options = producer_options
        self._queue: queue.Queue[tuple[bytes, bytes]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advmon-client", daemon=True)
        if start:
            self.start()

    def start(self) -> InferenceLogger:
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> ClientStats:
        """Send what is queued (up to ``timeout_s``), then stop."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        if self._thread.is_alive():  # a connection attempt in progress ends within its bootstrap timeout
            self._thread.join(max(0.0, deadline - time.monotonic()) + BOOTSTRAP_TIMEOUT_MS / 1000 + 1.0)
        return self.stats

    def __enter__(self) -> InferenceLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        producer = None
        while producer is None and not self._stop.is_set():
            try:
                from kafka import KafkaProducer

                options = {"bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, **self.producer_options}
                producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                         linger_ms=20, **options)
            except Exception as exc:  # the broker may come later; records queue (and drop) meanwhile
                log.warning("advmon client: Kafka not reachable (%s); retrying", type(exc).__name__)
                self._stop.wait(2.0)
        if producer is None:
            return
        try:
            while not (self._stop.is_set() and self._queue.empty()):
                batch = self._take()
                for value, key in batch:
                    future = producer.send(self.topic, value, key=key)
                    future.add_callback(lambda _: self._counts.add("sent"))
                    future.add_errback(lambda exc: self._counts.add("failed", error=str(exc)))
                if batch:
                    producer.flush()
        finally:
            producer.close(timeout=10)

    def _take(self) -> list[tuple[bytes, bytes]]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch


class AsyncInferenceLogger(_QueuedLogger):
    """asyncio: ``log()`` from async handlers (FastAPI, aiohttp); ``async with`` starts and drains it."""

    def __init__(self, bootstrap: str, topic: str = "inference-logs", max_queue: int = 10_000,
                 validate: bool = True, **producer_options: Any) -> None:
        super().__init__(validate)
        self.bootstrap, self.topic = bootstrap, topic
        self.producer_options = producer_options
        self._queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task | None = None

    async def start(self) -> AsyncInferenceLogger:
        self._task = asyncio.create_task(self._run())
        return self

    async def close(self, timeout_s: float = 30.0) -> ClientStats:
        """Send what is queued (up to ``timeout_s``), then stop."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout_s)
            except asyncio.TimeoutError:
                pass
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.stats

    async def __aenter__(self) -> AsyncInferenceLogger:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = None
        while producer is None:
            candidate = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                         linger_ms=20, **self.producer_options)
            try:
                await candidate.start()
                producer = candidate
            except Exception as exc:  # the broker may come later; records queue (and drop) meanwhile
                await candidate.stop()
                log.warning("advmon client: Kafka not reachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(2.0)
        try:
            while True:
                value, key = await self._queue.get()
                future = await producer.send(self.topic, value, key=key)
                future.add_done_callback(self._done)
        finally:
            await producer.stop()  # flushes what was handed over

    def _done(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self._counts.add("failed", error=str(future.exception() if not future.cancelled() else "cancelled"))
        else:
            self._counts.add("sent")
        self._queue.task_done()
