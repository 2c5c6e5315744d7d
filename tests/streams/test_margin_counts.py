"""The margin-counts reader: what the topic holds at a worker's start, then what comes after, without the worker's
own messages; a missing topic is a configuration error that names the fix."""

import asyncio

import numpy as np
import pytest

import streams.margin_counts as margin_counts
from monitor.contracts.margin_counts import MarginCounts, MarginCountsBatch
from monitor.errors import ConfigError
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.topics import Topics, create_topics


def counts(model, n):
    return MarginCounts(model, ("1",), np.full(n, 60), np.zeros(n, np.int64), np.zeros(n, np.int64),
                        np.arange(n), np.ones(n))


def test_a_starting_worker_reads_what_the_topic_holds_then_what_comes_without_its_own(kafka, prefix):
    from kafka import KafkaProducer

    topic = Topics.from_settings(Settings(topic_prefix=prefix)).margin_counts
    create_topics(kafka.bootstrap, [s for s in Topics.from_settings(Settings(topic_prefix=prefix)).specs(1)
                                    if s.name == topic])
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)

    def send(sender, model, n):
        producer.send(topic, MarginCountsBatch(sender, [counts(model, n)]).encode()).get(timeout=30)

    send("ingest-0-old", "m", 3)  # this worker before a restart: another process, counted in
    send("ingest-1-aa", "m", 2)
    send("ingest-0-new", "m", 5)  # its own: skipped

    async def run():
        reader = margin_counts.MarginCountsReader(kafka.bootstrap, topic, sender="ingest-0-new", metrics=metrics)
        try:
            at_start = await reader.start()
            send("ingest-1-aa", "later", 4)
            producer.send(topic, b"garbage").get(timeout=30)  # logged and skipped
            later: list = []
            for _ in range(100):
                later += await reader.poll()
                if reader.refused:
                    break
                await asyncio.sleep(0.1)
            return at_start, later, reader.refused
        finally:
            await reader.stop()

    metrics = Metrics()
    at_start, later, refused = asyncio.run(run())
    assert [len(p) for p in at_start] == [3, 2] and {p.model for p in at_start} == {"m"}
    assert [(p.model, len(p)) for p in later] == [("later", 4)] and refused == 1
    exported = {(s.name, s.labels["outcome"]): s.value for m in metrics.registry.collect() for s in m.samples
                if s.name == "advmon_margin_counts_messages_total"}
    assert exported == {("advmon_margin_counts_messages_total", "added"): 3.0,
                        ("advmon_margin_counts_messages_total", "refused"): 1.0}
    producer.close()


def test_a_missing_margin_counts_topic_stops_ingest_with_the_command_that_creates_it(monkeypatch):
    monkeypatch.setattr(margin_counts, "partition_counts", lambda bootstrap: {"p.inference-logs": 4})

    async def start():
        reader = margin_counts.MarginCountsReader("127.0.0.1:1", "p.margin-counts", sender="ingest-0-ab")
        try:
            await reader.start()
        finally:
            await reader.stop()

    with pytest.raises(ConfigError, match="p.margin-counts does not exist: run `advmon topics create`"):
        asyncio.run(start())
