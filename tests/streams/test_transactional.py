"""The transactional loop on the real broker: a producer that fails mid-transaction is replaced and the batch
is published exactly once, whether the failed transaction had committed or not, and whether or not the worker
handles the next batch while the transaction goes on (``overlap_publish``)."""

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.produce import produce
from streams.topics import TopicSpec, create_topics
from streams.transactional import Output, TransactionalWorker
from tests.streams.conftest import read_topic

RECORDS = 40


class EchoWorker(TransactionalWorker):
    """Publishes each input record to ``<input>.out``; its first publish fails as the test says."""

    role = "echo"

    def __init__(self, settings, input_topic, fail, overlap=False):
        super().__init__(settings, Metrics(), Health(), input_topic)
        self.fail, self.failed, self.overlap_publish = fail, False, overlap
        self.handled_while_publishing = 0

    async def handle(self, batches, consumer):
        self.handled_while_publishing += self.publishing is not None and not self.publishing.done()
        return [Output(f"{self.input_topic}.out", m.value, m.key) for ms in batches.values() for m in ms]

    async def _publish(self, producer, batches, outputs):
        if self.failed:
            return await super()._publish(producer, batches, outputs)
        self.failed = True
        if self.fail == "after-commit":  # committed, but the answer never came back
            await super()._publish(producer, batches, outputs)
            raise KafkaError("injected: connection closed after the commit")
        async with producer.transaction():  # aborted by the error, as when the broker goes away
            for output in outputs:
                await producer.send(output.topic, output.value, key=output.key)
            raise KafkaError("injected: connection closed before the commit")


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlapped"])
@pytest.mark.parametrize("fail", ["before-commit", "after-commit"])
def test_a_failed_transaction_is_published_exactly_once(kafka, prefix, fail, overlap, caplog):
    caplog.set_level(logging.INFO, logger="advmon.streams")
    source = f"{prefix}echo-in"
    create_topics(kafka.bootstrap, [TopicSpec(source, 2), TopicSpec(f"{source}.out", 1)])
    produce(kafka.bootstrap, source, [f'{{"i": {i}, "client_id": "c{i % 3}"}}'.encode() for i in range(RECORDS)])
    worker = EchoWorker(Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix, instance_id="echo-0",
                                 batch_size=16, batch_linger_seconds=0), source, fail, overlap)

    async def run():
        async def stop_when_done():
            while worker.records < RECORDS:
                await asyncio.sleep(0.1)
            worker.stopping.set()
        stopper = asyncio.create_task(stop_when_done())
        await asyncio.wait_for(worker.run(), timeout=120)
        stopper.cancel()

    asyncio.run(run())
    assert worker.failed
    out = read_topic(kafka.bootstrap, f"{source}.out", until=lambda r: len(r) >= RECORDS, timeout_s=10)
    values = sorted(r.value for r in out)
    assert len(values) == RECORDS and len(set(values)) == RECORDS  # none lost, none twice
    assert "replacing the producer" in caplog.text
    assert ("the failed transaction had committed" in caplog.text) == (fail == "after-commit")
    assert (worker.handled_while_publishing > 0) == overlap and worker.publishing is None


def test_a_revocation_waits_for_the_batch_in_flight_and_then_stales_what_was_read(monkeypatch, caplog):
    """No broker needed: the hand-over waits for the in-flight lock, bumps the generation (a batch read before
    is dropped), ignores the first join's empty revocation, and gives up waiting after HAND_OVER_WAIT_S."""
    from aiokafka import TopicPartition

    import streams.transactional as transactional

    worker = EchoWorker(Settings(), "in", "before-commit")
    hand_over = transactional.HandOver(worker, consumer=None)
    revoked = {TopicPartition("in", 0)}

    async def scenario():
        await hand_over.on_partitions_revoked(set())
        assert worker.generation == 0
        await worker.in_flight.acquire()  # a batch in flight
        waiting = asyncio.ensure_future(hand_over.on_partitions_revoked(revoked))
        await asyncio.sleep(0.05)
        assert not waiting.done() and worker.generation == 0
        worker.in_flight.release()  # its transaction ended
        await waiting
        assert worker.generation == 1
        worker.publishing = asyncio.get_running_loop().create_future()  # a transaction in the background
        waiting = asyncio.ensure_future(hand_over.on_partitions_revoked(revoked))
        await asyncio.sleep(0.05)
        assert not waiting.done() and worker.generation == 1 and worker.in_flight.locked()  # no batch starts
        worker.publishing.set_result(None)  # it ended
        await waiting
        assert worker.generation == 2 and worker.publishing.done()
        worker.publishing = None
        monkeypatch.setattr(transactional, "HAND_OVER_WAIT_S", 0.05)
        await worker.in_flight.acquire()  # a batch that never finishes
        await hand_over.on_partitions_revoked(revoked)
        assert worker.generation == 3

    with caplog.at_level(logging.WARNING, logger="advmon.streams"):
        asyncio.run(scenario())
    assert "handed over without it" in caplog.text


def test_assigned_partitions_start_at_the_stable_offsets_and_no_batch_is_handled_while_they_are_prepared(
        monkeypatch):
    """No broker needed: assigned partitions are sought to the group's stable committed offsets, and the worker's
    ``assigned`` (the matcher rebuilding its index) runs under the in-flight lock, so records fetched meanwhile
    are not handled by the state it is about to replace; an empty assignment calls nothing."""
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    import streams.transactional as transactional

    calls, sought = [], {}
    stable = {TopicPartition("in", 1): OffsetAndMetadata(76, "m")}

    class Consumer:  # aiokafka's own (unstable) fetch put partition 1 at 0
        async def position(self, tp):
            return 0

        def seek(self, tp, offset):
            sought[tp] = offset

    class Preparing(EchoWorker):
        async def assigned(self, partitions, committed):
            calls.append((sorted(p.partition for p in partitions), committed, self.in_flight.locked()))
            await asyncio.sleep(0.05)

    worker = Preparing(Settings(), "in", "before-commit")
    monkeypatch.setattr(worker.stable_offsets, "fetch", lambda partitions: stable)
    hand_over = transactional.HandOver(worker, Consumer())

    async def scenario():
        preparing = asyncio.ensure_future(hand_over.on_partitions_assigned({TopicPartition("in", 1)}))
        await asyncio.sleep(0.01)
        assert worker.in_flight.locked() and not preparing.done()
        await preparing
        assert not worker.in_flight.locked()
        await hand_over.on_partitions_assigned(set())

    asyncio.run(scenario())
    assert calls == [([1], stable, True)] and sought == {TopicPartition("in", 1): 76}


def test_a_worker_that_cannot_read_its_committed_offsets_stops_with_the_reason(monkeypatch):
    """No broker needed: aiokafka would log an error raised in a rebalance callback and go on reading from
    wherever; the worker stops instead and ``run`` raises the reason."""
    from aiokafka import TopicPartition

    import streams.transactional as transactional
    from monitor.errors import ServiceUnavailable

    worker = EchoWorker(Settings(), "in", "before-commit")

    def unreachable(partitions):
        raise TimeoutError("no coordinator")

    monkeypatch.setattr(worker.stable_offsets, "fetch", unreachable)
    asyncio.run(transactional.HandOver(worker, consumer=None).on_partitions_assigned({TopicPartition("in", 0)}))
    assert worker.stopping.is_set() and isinstance(worker.failure, ServiceUnavailable)
    assert "no coordinator" in str(worker.failure)


class Partitioned:
    """A producer that knows the alerter topic with ``n`` partitions, or not at all (None)."""

    def __init__(self, n):
        self.n = n

    async def partitions_for(self, topic):
        if self.n is None:
            raise UnknownTopicOrPartitionError()
        return set(range(self.n))


def test_messages_for_a_sharded_alerter_go_as_a_part_per_partition_and_a_missing_topic_is_a_config_error():
    import numpy as np

    from monitor.contracts.sli import SliRows
    from monitor.contracts.sli_buckets import SliBatch
    from monitor.errors import ConfigError

    worker = EchoWorker(Settings(), "in", fail="never")
    worker.alerter_topic = "sli-buckets"
    rows = SliRows.from_columns(bucket=np.zeros(3, np.int64), model=np.array(["m"] * 3, dtype=object),
                                client=np.array(["a", "b", "c"], dtype=object), ts=np.zeros(3),
                                flags={"events": np.ones(3, bool)}, confidence=np.ones(3))
    message = SliBatch("ingest-0", 1.0, 0, {}, rows)
    asyncio.run(worker._find_alerter_partitions(Partitioned(1)))
    [whole] = worker.alerter_outputs(message, b"k")
    assert whole.partition is None and SliBatch.decode(whole.value).population is None
    asyncio.run(worker._find_alerter_partitions(Partitioned(3)))
    parts = worker.alerter_outputs(message, b"k")
    assert [p.partition for p in parts] == [0, 1, 2]
    assert sum(len(SliBatch.decode(p.value).rows) for p in parts[1:]) == 3
    with pytest.raises(ConfigError, match="sli-buckets does not exist: run `advmon topics create`"):
        asyncio.run(worker._find_alerter_partitions(Partitioned(None)))
