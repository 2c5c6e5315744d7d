"""``monitor.client`` on the real broker: records arrive keyed by client, valid for ingest; and the serving path
never waits on Kafka (a full queue drops and counts)."""

import asyncio
import time

import orjson

from monitor.client import AsyncInferenceLogger, InferenceLogger, inference_record
from monitor.detect.parsing import parse_batch
from tests.streams.conftest import read_topic
from tests.streams.test_kafka_e2e import topics_for


def records(n, prefix):
    return [inference_record(f"key-{i % 4}", "digits", [0.2, 0.8], features=[float(i), 1.0], event_id=f"{prefix}{i}")
            for i in range(n)]


def check_topic(kafka, topic, n):
    logs = read_topic(kafka.bootstrap, topic, until=lambda r: len(r) >= n, timeout_s=30)
    assert len(logs) == n
    assert all(r.key.decode() == orjson.loads(r.value)["client_id"] for r in logs)
    assert not parse_batch([r.value for r in logs]).dead


def test_thread_logger_delivers_every_record_keyed_by_client(kafka, prefix):
    topics = topics_for(kafka, prefix)
    with InferenceLogger(kafka.bootstrap, topic=topics.inference_logs) as logger:
        assert all(logger.log(r) for r in records(200, "s"))
        assert not logger.log({"client_id": "k", "event_id": "x"})  # breaks the contract: counted, not sent
    stats = logger.stats
    assert (stats.sent, stats.dropped, stats.invalid, stats.failed, stats.queued) == (200, 0, 1, 0, 0)
    assert "missing required field" in stats.last_error
    check_topic(kafka, topics.inference_logs, 200)


def test_async_logger_delivers_every_record(kafka, prefix):
    topics = topics_for(kafka, prefix)

    async def main():
        async with AsyncInferenceLogger(kafka.bootstrap, topic=topics.inference_logs) as logger:
            for record in records(150, "a"):
                assert logger.log(record)
                await asyncio.sleep(0)
        return logger.stats

    stats = asyncio.run(main())
    assert (stats.sent, stats.dropped, stats.failed) == (150, 0, 0)
    check_topic(kafka, topics.inference_logs, 150)


def test_a_dead_broker_never_blocks_the_serving_path():
    logger = InferenceLogger("127.0.0.1:1", max_queue=100)  # nothing listens: the sender keeps retrying
    started = time.monotonic()
    accepted = sum(logger.log(r) for r in records(5000, "d"))
    elapsed = time.monotonic() - started
    assert accepted == 100 and logger.stats.dropped == 4900
    assert elapsed < 5.0  # 5,000 calls: a few ms each would already be visible; none waits on Kafka
    logger.close(timeout_s=0.5)
