"""``advmon ingest``: batch-consume ``inference-logs``, run the vectorized engine, write its outputs.

One Kafka transaction per batch holds everything the batch produced (SLI aggregates for the
alerter, dead letters, suspicious inputs) together with the consumed offsets: a crash at any point
either publishes all of it and moves the offsets, or none of it (the batch is processed again).
Readers use ``read_committed``. The transactional id is stable per instance
(``ADVMON_INSTANCE_ID``), so a restarted instance fences its predecessor.

The consumer is aiokafka's ``getmany`` (the fastest Python client measured; see ``bench/ingest.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from monitor.config import Settings
from monitor.engine import BatchResult, Engine, Suspicious
from monitor.metrics import Metrics
from monitor.parsing import ParsedBatch, parse_batch
from monitor.runtime import observe_batch
from monitor.scoring import Profile
from monitor.watermarks import PartitionWatermarks
from monitor.wire import Evidence, SliBatch
from streams.http import Health
from streams.topics import Topics

log = logging.getLogger("advmon.ingest")
GROUP_ID = "advmon-ingest"


@dataclass
class IngestTotals:
    batches: int = 0
    records: int = 0
    dead: int = 0


class IngestWorker:
    def __init__(self, settings: Settings, metrics: Metrics, health: Health, profile: Profile | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.metrics = metrics
        self.health = health
        self.engine = Engine(settings.engine_settings(), profile)
        self.group_id = settings.topic_prefix + GROUP_ID
        self.totals = IngestTotals()
        self.stopping = asyncio.Event()
        self.watermarks = PartitionWatermarks(settings.idle_source_seconds)
        self.watermark = float("-inf")

    async def run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            self.topics.inference_logs, bootstrap_servers=s.kafka_bootstrap, group_id=self.group_id,
            client_id=f"advmon-ingest-{s.instance_id}", group_instance_id=f"{self.group_id}-{s.instance_id}",
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=1 << 20, isolation_level="read_committed")
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, transactional_id=f"{self.group_id}-{s.instance_id}",
            enable_idempotence=True, linger_ms=5, max_request_size=8 << 20)
        await _start_with_retry(producer, consumer, s.kafka_bootstrap)
        log.info("ingest %s consuming %s from %s", s.instance_id, self.topics.inference_logs, s.kafka_bootstrap)
        self.health.ready = True
        try:
            while not self.stopping.is_set():
                self.health.beat()
                batches = await consumer.getmany(timeout_ms=500, max_records=s.batch_size)
                if batches:
                    await self._process(batches, producer, consumer)
        finally:
            self.health.ready = False
            log.info("ingest %s stopping after %d batches (%d records, %d dead-lettered)", s.instance_id,
                     self.totals.batches, self.totals.records, self.totals.dead)
            await consumer.stop()
            await producer.stop()

    async def _process(self, batches: dict, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        started = time.perf_counter()
        records, sources, offsets = [], [], {}
        for tp, messages in batches.items():
            for message in messages:
                records.append(message.value if message.value is not None else b"")
                sources.append(f"{tp.topic}/{tp.partition}@{message.offset}")
            offsets[tp] = (messages[0].offset, messages[-1].offset + 1)
        parsed = parse_batch(records, sources, self.settings.max_record_bytes)
        parsed_at = time.perf_counter()
        result = self.engine.process(parsed.batch)
        engine_at = time.perf_counter()
        late = int((parsed.batch.ts < self.watermark - self.settings.grace_seconds).sum())
        self.watermark = await self._advance_watermark(consumer, batches, parsed)
        await self._publish(producer, parsed, result, offsets, late)
        self.totals.batches += 1
        self.totals.records += len(records)
        self.totals.dead += len(parsed.dead)
        observe_batch(self.metrics, result, self.engine.fingerprint_memory_bytes)
        for letter in parsed.dead:
            self.metrics.dead_letters.labels(reason=letter.category).inc()
        m = self.metrics.batch_seconds
        m.labels(stage="parse").observe(parsed_at - started)
        m.labels(stage="engine").observe(engine_at - parsed_at)
        m.labels(stage="publish").observe(time.perf_counter() - engine_at)

    async def _advance_watermark(self, consumer: AIOKafkaConsumer, batches: dict, parsed: ParsedBatch) -> float:
        """Per-partition event time: the slowest partition with data holds the watermark (see monitor.watermarks)."""
        dead_per_partition = Counter(letter.source.rsplit("@", 1)[0] for letter in parsed.dead)
        names = [f"{tp.topic}/{tp.partition}" for tp in batches]
        valid = np.array([len(batches[tp]) - dead_per_partition[name] for tp, name in zip(batches, names)])
        ends = np.cumsum(valid)
        max_ts = {name: float(parsed.batch.ts[end - n:end].max()) for name, n, end in zip(names, valid, ends) if n}
        now = time.monotonic()
        self.watermarks.observe(max_ts, now)
        backlog = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            position = await consumer.position(tp)
            unread = 0 if high is None else max(0, high - position)
            backlog[f"{tp.topic}/{tp.partition}"] = unread
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(unread)
        return self.watermarks.watermark(backlog, now)

    async def _publish(self, producer: AIOKafkaProducer, parsed: ParsedBatch, result: BatchResult,
                       offsets: dict[TopicPartition, tuple[int, int]], late: int) -> None:
        t = self.topics
        message = SliBatch(
            instance=self.settings.instance_id, watermark=self.watermark, late=late,
            offsets={f"{tp.topic}/{tp.partition}": span for tp, span in offsets.items()},
            rows=result.rows, evidence=_evidence(result.suspicious))
        try:
            async with producer.transaction():
                futures = [await producer.send(t.sli_buckets, message.encode(), key=self.settings.instance_id.encode())]
                for letter in parsed.dead:
                    futures.append(await producer.send(t.dead_letters, letter.to_json(), key=letter.source.encode()))
                for doc in _suspicious_docs(result.suspicious):
                    futures.append(await producer.send(t.suspicious_inputs, orjson.dumps(doc),
                                                       key=doc["event_id"].encode()))
                await asyncio.gather(*futures)
                await producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(end, "") for tp, (_, end) in offsets.items()}, self.group_id)
        except Exception:
            self.metrics.transactions.labels(outcome="aborted").inc()
            raise
        self.metrics.transactions.labels(outcome="committed").inc()
        sent = {t.sli_buckets: 1, t.dead_letters: len(parsed.dead), t.suspicious_inputs: len(result.suspicious)}
        for topic, count in sent.items():
            if count:
                self.metrics.produced.labels(topic=topic).inc(count)


def _evidence(suspicious: Suspicious) -> Evidence:
    return Evidence(suspicious.event_id, suspicious.model, suspicious.client_id, suspicious.fingerprint)


def _suspicious_docs(s: Suspicious) -> list[dict]:
    return [{"event_id": e, "model": m, "client_id": c, "ts": float(ts), "reason": r, "fingerprint": f}
            for e, m, c, ts, r, f in zip(s.event_id, s.model, s.client_id, s.ts, s.reason, s.fingerprint)]


async def _start_with_retry(producer, consumer, bootstrap: str, attempts: int = 30) -> None:
    """Kafka may come up after us (compose, Kubernetes): retry for about a minute, then fail clearly."""
    for attempt in range(1, attempts + 1):
        try:
            await producer.start()
            await consumer.start()
            return
        except Exception as exc:  # KafkaConnectionError and friends
            await producer.stop()
            await consumer.stop()
            if attempt == attempts:
                raise SystemExit(f"advmon: cannot reach Kafka at {bootstrap} after {attempts} attempts: {exc}") from None
            log.warning("Kafka at %s not reachable (%s); retrying in 2 s", bootstrap, exc)
            await asyncio.sleep(2.0)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT finish the batch in hand, commit it, leave the group and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_ingest(worker: IngestWorker) -> None:
    install_stop_handlers(worker.stopping)
    await worker.run()
