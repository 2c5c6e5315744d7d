"""``advmon collect``: an HTTP endpoint that takes inference records and produces them to ``inference-logs``.

- ``POST /v1/events``: the event contract, as a JSON array or JSON Lines (``advmon schema events``).
- ``POST /v1/kserve``: KServe's inference logger (CloudEvents, binary or structured mode): requests and
  responses joined by CloudEvent id (:mod:`monitor.intake.kserve`).

Every record is validated here by the same parser as ingest: valid ones go to ``inference-logs`` keyed by
``client_id``, the others to the dead-letter topic with their reason (nothing is dropped). The answer comes
after the broker acknowledged every record (``acks=all``), with the counts and the first reasons; a broker
that cannot be reached answers 503 so the caller retries. A bearer token (``ADVMON_COLLECT_TOKEN``) guards the
POSTs; bodies over ``--max-body-bytes`` get 413. ``/healthz``, ``/readyz`` and ``/metrics`` need no token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.contracts.dead_letters import DeadLetter
from monitor.detect.parsing import parse_batch
from monitor.intake.kserve import KServePairs, cloud_event
from monitor.intake.protocols import ProtocolError
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.topics import Topics

log = logging.getLogger("advmon.collect")
MAX_REASONS = 20


def split_records(body: bytes) -> list[bytes]:
    """A JSON array's elements (re-encoded) or JSON Lines' non-blank lines; a body that is neither is one record.

    >>> split_records(b'[{"a": 1}, {"b": 2}]'), split_records(b'{"a": 1}\\n\\n{"b": 2}\\n')
    ([b'{"a":1}', b'{"b":2}'], [b'{"a": 1}', b'{"b": 2}'])
    """
    stripped = body.strip()
    if stripped.startswith(b"["):
        try:
            return [orjson.dumps(item) for item in orjson.loads(stripped)]
        except orjson.JSONDecodeError:
            return [stripped]  # not an array after all: dead-lettered as invalid JSON
    return [line.strip() for line in stripped.split(b"\n") if line.strip()]


class Collector:
    """The HTTP handlers over one idempotent Kafka producer."""

    def __init__(self, settings: Settings, metrics: Metrics, token: str | None, client_header: str = "X-Client-Id",
                 pair_ttl_s: float = 60.0) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = Topics.from_settings(settings)
        self.token = token
        self.pairs = KServePairs(client_header=client_header, ttl_s=pair_ttl_s)
        self.producer: AIOKafkaProducer | None = None
        self.max_body_bytes = 0
        self._lock = asyncio.Lock()  # the pairing state is shared by concurrent requests

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                         enable_idempotence=True, linger_ms=5,
                                         max_request_size=max(self.settings.max_record_bytes * 2, 1 << 20))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def app(self, max_body_bytes: int) -> web.Application:
        self.max_body_bytes = max_body_bytes
        app = web.Application(client_max_size=max_body_bytes, middlewares=[self._auth])
        app.add_routes([web.post("/v1/events", self.events), web.post("/v1/kserve", self.kserve),
                        web.get("/healthz", self.health), web.get("/readyz", self.health),
                        web.get("/metrics", self.metrics_page)])
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.method == "POST" and self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body over {self.max_body_bytes} bytes: send smaller batches"},
                                     status=413)

    async def events(self, request: web.Request) -> web.Response:
        body = await request.read()
        return await self._deliver(split_records(body), [], source="events", peer=request.remote or "")

    async def kserve(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        try:
            event = cloud_event(request.headers, body)
        except ProtocolError as exc:
            return await self._deliver([], [(f"kserve: {exc}", body)], source="kserve", peer=request.remote or "")
        async with self._lock:
            records, dead = self.pairs.add(event, now)
            self.metrics.collect_pending.set(self.pairs.pending)
        return await self._deliver(records, dead, source="kserve", peer=request.remote or "", status=202)

    async def expire_forever(self, every_s: float = 5.0) -> None:
        """Dead-letter KServe halves whose partner never came (kept and tried again while Kafka refuses)."""
        waiting: list[DeadLetter] = []
        while True:
            await asyncio.sleep(every_s)
            async with self._lock:
                dead = self.pairs.expire(time.time())
                self.metrics.collect_pending.set(self.pairs.pending)
            waiting += [DeadLetter(reason, raw, "collect:kserve") for reason, raw in dead]
            if waiting:
                try:
                    await self._produce([], waiting)
                    self.metrics.collected.labels(source="kserve", outcome="rejected").inc(len(waiting))
                    waiting = []
                except KafkaError as exc:
                    log.warning("collect: %d unpaired KServe events wait for Kafka (%s)", len(waiting),
                                type(exc).__name__)

    async def _deliver(self, records: Sequence[bytes], dead: list[tuple[str, bytes]], source: str, peer: str,
                       status: int = 200) -> web.Response:
        parsed = parse_batch(records, sources=[f"collect:{source}:{peer}#{i}" for i in range(len(records))],
                             max_bytes=self.settings.max_record_bytes,
                             not_after=time.time() + self.settings.max_future_skew_seconds)
        letters = [*parsed.dead, *(DeadLetter(reason, raw, f"collect:{source}:{peer}") for reason, raw in dead)]
        valid = [records[i] for i in parsed.valid.tolist()]
        clients = parsed.batch.client_id.tolist() if len(parsed.batch) else []
        try:
            await self._produce(list(zip(valid, clients, strict=True)), letters)
        except KafkaError as exc:
            log.warning("collect: Kafka refused %d records: %s", len(valid) + len(letters), type(exc).__name__)
            return web.json_response({"error": f"Kafka unavailable ({type(exc).__name__}); retry"}, status=503,
                                     headers={"Retry-After": "5"})
        self.metrics.collected.labels(source=source, outcome="accepted").inc(len(valid))
        self.metrics.collected.labels(source=source, outcome="rejected").inc(len(letters))
        for letter in letters:
            self.metrics.dead_letters.labels(reason=letter.category).inc()
        return web.json_response({"accepted": len(valid), "rejected": len(letters),
                                  "errors": [{"source": d.source, "reason": d.reason} for d in letters[:MAX_REASONS]],
                                  "pending": self.pairs.pending}, status=status)

    async def _produce(self, records: list[tuple[bytes, str]], letters: list[DeadLetter]) -> None:
        assert self.producer is not None, "start() first"
        sends = [await self.producer.send(self.topics.inference_logs, raw, key=client.encode())
                 for raw, client in records]
        sends += [await self.producer.send(self.topics.dead_letters, letter.to_json(), key=letter.source.encode())
                  for letter in letters]
        if sends:
            await asyncio.gather(*sends)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": self.producer is not None, "pending_kserve_calls": self.pairs.pending},
                                 status=200 if self.producer is not None else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(collector: Collector, host: str, port: int, max_body_bytes: int,
                stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever); the producer flushes before the process exits."""
    await collector.start()
    runner = web.AppRunner(collector.app(max_body_bytes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("collect: listening on %s:%d, producing to %s", host, port, collector.topics.inference_logs)
    expiry = asyncio.create_task(collector.expire_forever())
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        expiry.cancel()
        await runner.cleanup()
        await collector.stop()
