"""Consume a batch, compute, and publish the outputs and the consumed offsets in one Kafka transaction.

The shared loop of ``advmon ingest`` and ``advmon scorer``: a crash at any point either publishes
everything a batch produced and moves its offsets, or nothing (the batch is processed again). A producer
that fails mid-transaction (the broker restarting under it) is replaced and the batch's outputs published
again in a new transaction, unless the group's committed offsets show the first one did commit.
Readers use ``read_committed``. The transactional id is stable per instance (``ADVMON_INSTANCE_ID``),
so a restarted instance fences its predecessor; static group membership gives its partitions back
at once. The consumer is aiokafka's ``getmany`` (the fastest Python client here; see ``bench/ingest.py``).

Partitions change hands only between batches (:class:`HandOver`): aiokafka's transactional offsets carry no
group generation (Kafka's KIP-447 fencing), so a worker that lost a partition in a rebalance could otherwise
still commit a batch of it after the new owner had read the old committed offset, and those records would be
counted twice (measured: 382 of 32,084 events with three workers, one SIGKILLed). A partition assigned is read
on from the group's stable committed offset (:meth:`TransactionalWorker.take_over`: a transaction's offsets are
visible a moment after it commits), and a worker may prepare for its partitions (the matcher rebuilds its index)
before any of their records is handled.

A worker may overlap a batch's transaction with the next batch (``overlap_publish``: ingest and the scorer): the
transaction goes on in the background while the next batch is read and handled (in a thread), and it ends before
the next transaction begins, before partitions are handed over, and before the worker stops. A crash then loses the
handled batch with the one in flight, and both are read again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from monitor.contracts.dead_letters import DeadLetter
from monitor.contracts.shards import split
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.watermarks import PartitionWatermarks
from monitor.errors import ConfigError, ServiceUnavailable, WireError
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.http import Health

log = logging.getLogger("advmon.streams")
T = TypeVar("T")

#: How long the broker lets a transaction stay open before aborting it. A worker that dies mid-transaction and
#: does not come back (its id is never reused, so nothing fences it) holds every read_committed reader of the
#: partitions it wrote to, the alerter's single sli-buckets partition among them, for this long. A batch's
#: transaction lasts well under a second; one that outlives this is aborted and published again.
TRANSACTION_TIMEOUT_MS = 10_000
#: The producer's record batch per partition (aiokafka's default is 16 KB). A send to a partition whose batch is full
#: waits for that batch's round trip, so a batch's hundreds of suspicious inputs went out in dozens of sequential
#: requests. Under the broker's default message.max.bytes (1 MB); a larger message still goes alone.
MAX_BATCH_BYTES = 512 << 10
#: How long the broker holds a fetch for partitions with nothing new. aiokafka fetches a partition again only once
#: its buffered records are taken, and sends no other fetch to a broker while one waits there: with a backlog on
#: some partitions and none on others, every batch waited out this hold (500 ms by default; measured in
#: bench/ingest.py: batches of a finite backlog took 0.45-0.5 s to gather instead of 0.01-0.02 s).
FETCH_MAX_WAIT_MS = 50
#: How long a revocation waits for the batch in flight (which takes well under a second). Past it the partitions
#: are handed over anyway, with a warning: the batch may then be counted again by their next owner, which beats a
#: group stuck in its rebalance.
HAND_OVER_WAIT_S = 30.0


@dataclass(frozen=True)
class Output:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None  # None: the key's


def dead_letter_output(topic: str, letter: DeadLetter) -> Output:
    return Output(topic, letter.to_json(), letter.source.encode())


def suspicious_output(topic: str, doc: dict) -> Output:
    """A ``suspicious-inputs`` record, keyed by fingerprint (else event id): compaction keeps one record
    per near-identical suspicious input."""
    return Output(topic, orjson.dumps(doc), (doc["fingerprint"] or doc["event_id"]).encode())


class TransactionalWorker:
    """Subclasses name their ``role`` and input topic and implement :meth:`handle`."""

    role = "worker"
    #: Whether a batch's transaction runs in the background while the next batch is handled (only for a worker
    #: whose :meth:`commit_metadata` does not change as batches are handled).
    overlap_publish = False
    #: Whether a batch waits up to ``batch_linger_seconds`` to fill (not where each message is a step of a round trip
    #: between workers, as between the sharded matcher's reduce and shards).
    lingers = True
    #: The largest message it may send (the broker's ``message.max.bytes``, or the topic's ``max.message.bytes``,
    #: must allow it too).
    max_message_bytes = 8 << 20
    #: The most records a batch takes (None: ``batch_size``). The matcher's records are requests of up to about
    #: 1,600 queries each: a backlog read in batches of 4,096 of them would be matched millions at a time.
    batch_records: int | None = None
    #: How the group shares the partitions among its members (aiokafka's default: round robin).
    assignor: type = RoundRobinPartitionAssignor

    def __init__(self, settings: Settings, metrics: Metrics, health: Health, input_topic: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.input_topic = input_topic
        self.input_topics = [input_topic]  # all it subscribes to (the first sets the watermark's partition count)
        self.group_id = f"{settings.topic_prefix}advmon-{self.role}"
        self.stopping = asyncio.Event()
        self.watermarks = PartitionWatermarks(settings.idle_source_seconds)
        self.partition_marks: dict[str, float] = {}  # the assigned partitions holding the watermark, and theirs
        self.input_partitions = 0  # of the input topic: a reader of several workers' outputs waits for them all
        self.alerter_topic: str | None = None  # where its sli-buckets messages go, if any (a part per partition)
        self.alerter_partitions = 1  # of that topic, read from the broker at the start
        self.batches = 0
        self.records = 0
        self.in_flight = asyncio.Lock()  # held from a batch's hand-over check until its transaction ends or starts
        # in the background (then the hand-over waits for that too: :meth:`quiesced`)
        self.generation = 0  # revocations so far: a batch read before one is dropped
        self.stable_offsets = StableOffsets(settings.kafka_bootstrap, self.group_id)
        self.failure: ServiceUnavailable | None = None  # raised by run: what a rebalance callback could not do
        self.publishing: asyncio.Task[AIOKafkaProducer] | None = None  # the transaction in the background, if any

    async def handle(self, batches: dict[TopicPartition, list], consumer: AIOKafkaConsumer) -> Sequence[Output]:
        raise NotImplementedError

    def alerter_outputs(self, message: SliBatch, key: bytes) -> list[Output]:
        """An sli-buckets message for the alerter: whole where its topic has one partition, else a part per
        partition (:func:`monitor.contracts.shards.split`: the model stage, then the client shards)."""
        assert self.alerter_topic is not None
        if self.alerter_partitions == 1:
            return [Output(self.alerter_topic, message.encode(), key)]
        return [Output(self.alerter_topic, part.encode(), key, partition)
                for partition, part in enumerate(split(message, self.alerter_partitions))]

    def decoded(self, batches: dict[TopicPartition, list], decode: Callable[[bytes], T], dead_letters: str,
                outputs: list[Output]) -> Iterator[tuple[TopicPartition, ConsumerRecord, T]]:
        """Each message of a batch, decoded; one that does not decode goes to ``dead_letters`` (appended to
        ``outputs``, so in the batch's transaction) and is skipped."""
        for tp, messages in batches.items():
            for message in messages:
                try:
                    decoded = decode(message.value or b"")
                except WireError as exc:
                    letter = DeadLetter(str(exc), message.value or b"", f"{partition_name(tp)}@{message.offset}")
                    outputs.append(dead_letter_output(dead_letters, letter))
                    self.metrics.dead_letters.labels(reason="other").inc()
                    continue
                yield tp, message, decoded

    def commit_metadata(self) -> str:
        """Committed with each batch's offsets, in its transaction (Kafka keeps up to 4 KB); nothing by default."""
        return ""

    def held_positions(self) -> dict[TopicPartition, int]:
        """Offsets committed with every transaction besides those of the batch's own partitions (a worker reading
        several partitions whose state is one checkpoint commits it on all of them, so that whichever it reads back
        is the latest); none by default."""
        return {}

    async def assigned(self, partitions: set[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
                       ) -> None:
        """Called when partitions of the input topic are assigned, with the group's committed offsets (and their
        metadata) for them, before any of their records is handled."""

    async def take_over(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Read assigned partitions on from the group's *stable* committed offsets, then :meth:`assigned`.

        A transaction's offsets become visible in the group a moment after the transaction commits (its markers
        are written after the commit returns). aiokafka fetches committed offsets without waiting for that
        (OffsetFetch before KIP-447's ``require_stable``), so a partition handed over right after a batch could
        be read again from the offset before it and counted twice (measured under load: a worker re-read
        offsets 0-76 of a partition it had just committed to 76). kafka-python asks for stable offsets under
        read_committed; where aiokafka's position (its own fetch, done by then) is behind, it moves forward.
        Never backward: seeking before aiokafka's own reset lands would be undone by it."""
        try:
            committed = await asyncio.to_thread(self.stable_offsets.fetch, partitions)
        except Exception as exc:  # aiokafka would log a callback's error and go on: stop instead, loudly
            self.failure = ServiceUnavailable(f"{self.role}: cannot read the group's committed offsets of "
                                              f"{sorted(map(partition_name, partitions))}: {exc}")
            self.stopping.set()
            return
        for tp, stable in committed.items():
            position = await consumer.position(tp)
            if stable.offset > position:
                log.info("%s: %s read on from its stable committed offset %d, not %d", self.role,
                         partition_name(tp), stable.offset, position)
                consumer.seek(tp, stable.offset)
        await self.assigned(partitions, committed)

    def idle_outputs(self) -> tuple[Sequence[Output], dict[TopicPartition, int]]:
        """When a poll brought nothing: what to publish anyway, and the offsets to commit with it (again, with
        :meth:`commit_metadata`); nothing by default. The matcher's watermark moves when a worker goes quiet."""
        return [], {}

    async def idle_failed(self, consumer: AIOKafkaConsumer) -> None:
        """The transaction of :meth:`idle_outputs` failed: whatever state produced them is not committed."""

    def final_outputs(self) -> Sequence[Output]:
        """What a worker still holds when it is asked to stop (published in a last transaction, with no input
        offsets); nothing by default."""
        return []

    async def run(self) -> None:
        s = self.settings
        member = f"{self.group_id}-{s.instance_id}"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=self.group_id, client_id=member,
            group_instance_id=member, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=1 << 20, isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, partition_assignment_strategy=(self.assignor,))
        producer = self.new_producer()
        await _start_with_retry(producer, consumer, s.kafka_bootstrap)
        try:
            await self._find_alerter_partitions(producer)
            consumer.subscribe(self.input_topics, listener=HandOver(self, consumer))
            log.info("%s %s consuming %s from %s", self.role, s.instance_id, ", ".join(self.input_topics),
                     s.kafka_bootstrap)
            self.health.ready = True
            while not self.stopping.is_set():
                self.health.beat()
                batches, generation = await self._gather(consumer)
                async with self.in_flight:
                    if batches and generation == self.generation:
                        producer = await self._process(producer, consumer, batches)
                    elif not batches:
                        producer = await self._publish_idle(await self._settled(producer), consumer)
            producer = await self._settled(producer)
            if self.failure is not None:
                raise self.failure
            if last := self.final_outputs():
                try:
                    await self._publish(producer, {}, last)
                except (KafkaError, OSError) as exc:
                    log.warning("%s: what was held at the stop was not published (%s: %s)", self.role,
                                type(exc).__name__, exc)
        finally:
            if self.publishing is not None:  # failing: let the transaction end (or fail) before the producer stops
                producer = await self._ended(self.publishing, producer)
            self.health.ready = False
            log.info("%s %s stopping after %d batches (%d records)", self.role, s.instance_id, self.batches,
                     self.records)
            await consumer.stop()
            await producer.stop()
            await asyncio.to_thread(self.stable_offsets.close)

    async def _find_alerter_partitions(self, producer: AIOKafkaProducer) -> None:
        """How many partitions the topic of its alerter messages has (each message goes as a part per partition)."""
        if self.alerter_topic is None:
            return
        try:
            self.alerter_partitions = len(await producer.partitions_for(self.alerter_topic))
        except UnknownTopicOrPartitionError:
            raise ConfigError(f"topic {self.alerter_topic} does not exist: run `advmon topics create` (with the "
                              "broker's automatic topic creation off, every topic must be created)") from None
        if self.alerter_partitions > 1:
            log.info("%s: the alerter is sharded over %d partitions of %s", self.role, self.alerter_partitions,
                     self.alerter_topic)

    async def _process(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                       batches: dict[TopicPartition, list]) -> AIOKafkaProducer:
        """Handle one batch and publish its outputs with its offsets (in the background where the worker
        overlaps, once the previous transaction has ended); the producer to go on with."""
        outputs = await self.handle(batches, consumer)
        transaction = self._transaction(await self._settled(producer), consumer, batches, outputs)
        if not self.overlap_publish:
            return await transaction
        self.publishing = asyncio.create_task(transaction)
        return producer

    async def _transaction(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                           batches: dict[TopicPartition, list], outputs: Sequence[Output]) -> AIOKafkaProducer:
        """Publish a batch's outputs with its offsets, recovering from a failed producer; the producer to go on
        with."""
        try:
            await self._publish(producer, batches, outputs)
        except (KafkaError, OSError) as exc:
            producer = await self._recover(producer, consumer, batches, outputs, exc)
        self.batches += 1
        self.records += sum(len(m) for m in batches.values())
        return producer

    async def _settled(self, producer: AIOKafkaProducer) -> AIOKafkaProducer:
        """Once the transaction in the background (if any) has ended: the producer to go on with (it raises what
        the transaction could not recover from)."""
        if self.publishing is None:
            return producer
        task, self.publishing = self.publishing, None
        return await task

    async def _ended(self, task: asyncio.Task[AIOKafkaProducer], producer: AIOKafkaProducer) -> AIOKafkaProducer:
        """On the way out after a failure: the background transaction ended, the producer to stop (its failure is
        logged, not raised: the one being raised came first)."""
        self.publishing = None
        try:
            return await task
        except Exception as exc:
            log.warning("%s: the transaction in the background failed too (%s: %s)", self.role, type(exc).__name__,
                        exc)
            return producer

    async def quiesced(self, timeout_s: float) -> bool:
        """Whether the batch in flight and the transaction in the background (if any) ended within ``timeout_s``;
        no batch starts before the caller's next await."""
        try:
            async with asyncio.timeout(timeout_s), self.in_flight:
                if self.publishing is not None:
                    await asyncio.wait([self.publishing])
        except TimeoutError:
            return False
        return True

    async def _publish_idle(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> AIOKafkaProducer:
        """Publish :meth:`idle_outputs`, if any. On failure, a new producer; the worker is told (its state may
        be ahead of what was committed) and the outputs of the next idle poll take their place."""
        outputs, positions = self.idle_outputs()
        if not outputs:
            return producer
        try:
            await self._publish(producer, {}, outputs, positions)
        except (KafkaError, OSError) as exc:
            log.warning("%s: publishing while idle failed (%s: %s); replacing the producer", self.role,
                        type(exc).__name__, exc)
            await _stop_quietly(producer)
            producer = self.new_producer()
            await producer.start()
            await self.idle_failed(consumer)
        return producer

    async def _gather(self, consumer: AIOKafkaConsumer) -> tuple[dict[TopicPartition, list], int]:
        """One batch: what is there, then more for up to ``batch_linger_seconds`` while under ``batch_size``.
        At a low rate, a batch per fetch would be a handful of records and an sli-buckets message each,
        which the alerter then pays for one by one. Also the rebalance generation its records were read in:
        records read before a revocation are dropped (aiokafka returns none while a rebalance is under way,
        and the new assignment reads on from the committed offsets)."""
        s = self.settings
        limit = self.batch_records or s.batch_size
        batches = await consumer.getmany(timeout_ms=500, max_records=limit)
        generation = self.generation  # records come back under the assignment current when the call returns
        deadline = time.monotonic() + (s.batch_linger_seconds if self.lingers else 0.0)
        count = sum(len(m) for m in batches.values())
        while batches and count < limit and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await consumer.getmany(timeout_ms=int(left * 1000) + 1, max_records=limit - count)
            if self.generation != generation:  # revoked while reading: what came before is stale
                batches, count, generation = {}, 0, self.generation
            for tp, messages in more.items():
                batches.setdefault(tp, []).extend(messages)
                count += len(messages)
        return batches, generation

    def new_producer(self) -> AIOKafkaProducer:
        """The transactional producer; its id is stable per instance, so a new one fences the old one."""
        s = self.settings
        return AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap,
                                transactional_id=f"{self.group_id}-{s.instance_id}", enable_idempotence=True,
                                linger_ms=5, max_batch_size=MAX_BATCH_BYTES,
                                max_request_size=self.max_message_bytes,
                                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)

    async def _recover(self, failed: AIOKafkaProducer, consumer: AIOKafkaConsumer, batches: dict,
                       outputs: Sequence[Output], error: Exception, attempts: int = 30) -> AIOKafkaProducer:
        """Replace a producer that failed mid-transaction and publish the batch again, exactly once: a new
        producer with the same transactional id aborts whatever the old one left open; if the group's
        committed offsets already cover the batch, its transaction had committed and nothing is sent again."""
        log.warning("%s: transaction failed (%s: %s); replacing the producer", self.role, type(error).__name__, error)
        await _stop_quietly(failed)
        for attempt in range(1, attempts + 1):
            producer = self.new_producer()
            try:
                await producer.start()
                if await self._committed(consumer, batches):
                    log.info("%s: the failed transaction had committed; nothing to publish again", self.role)
                else:
                    await self._publish(producer, batches, outputs)
                return producer
            except (KafkaError, OSError) as exc:
                await _stop_quietly(producer)
                if isinstance(exc, MessageSizeTooLargeError):  # the same batch will never fit: say so at once
                    raise ServiceUnavailable(f"{self.role}: an output is larger than the broker accepts: "
                                             f"{exc}") from None
                if attempt == attempts:
                    raise ServiceUnavailable(f"{self.role}: cannot publish a batch after {attempts} attempts: "
                                             f"{exc}") from None
                log.warning("%s: publishing again failed (%s); retrying in 2 s", self.role, type(exc).__name__)
                await asyncio.sleep(2.0)
        raise AssertionError("unreachable")

    async def _committed(self, consumer: AIOKafkaConsumer, batches: dict) -> bool:
        """Whether the group's stable committed offsets already include every record of the batch (a transaction
        that committed just before the failure may still be completing)."""
        committed = await asyncio.to_thread(self.stable_offsets.fetch, set(batches))
        return all(tp in committed and committed[tp].offset > messages[-1].offset for tp, messages in batches.items())

    async def _publish(self, producer: AIOKafkaProducer, batches: dict, outputs: Sequence[Output],
                       positions: dict[TopicPartition, int] | None = None) -> None:
        """One transaction: the outputs, and the offsets after the batch (or ``positions``) with the worker's
        :meth:`commit_metadata`."""
        started = time.perf_counter()
        ends = {**self.held_positions(), **(positions or {}),
                **{tp: messages[-1].offset + 1 for tp, messages in batches.items()}}
        try:
            async with producer.transaction():
                futures = [await producer.send(o.topic, o.value, key=o.key, partition=o.partition) for o in outputs]
                await asyncio.gather(*futures)
                if ends:
                    metadata = self.commit_metadata()
                    await producer.send_offsets_to_transaction(
                        {tp: OffsetAndMetadata(end, metadata) for tp, end in ends.items()}, self.group_id)
        except Exception:
            self.metrics.transactions.labels(outcome="aborted").inc()
            raise
        self.metrics.transactions.labels(outcome="committed").inc()
        counts: dict[str, int] = {}
        for output in outputs:
            counts[output.topic] = counts.get(output.topic, 0) + 1
        for topic, count in counts.items():
            self.metrics.produced.labels(topic=topic).inc(count)
        self.metrics.batch_seconds.labels(stage="publish").observe(time.perf_counter() - started)

    async def advance_watermark(self, consumer: AIOKafkaConsumer, max_ts: dict[str, float]) -> float:
        """Per-partition event time: the slowest partition with data holds the watermark (monitor.detect.watermarks)."""
        now = time.monotonic()
        self.watermarks.observe(max_ts, now)
        backlog = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            unread = 0 if high is None else max(0, high - await consumer.position(tp))
            backlog[partition_name(tp)] = unread
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(unread)
        self.partition_marks = self.watermarks.holding(backlog, now)
        self.input_partitions = len(consumer.partitions_for_topic(self.input_topic) or ())
        return self.watermarks.watermark(backlog, now)


class HandOver(ConsumerRebalanceListener):
    """Partitions are handed over between batches: a revocation waits for the batch in flight to commit (its
    offsets tell the next owner where to start), and a batch read before the revocation is dropped unprocessed
    (the new assignment reads it again from the committed offsets, here or at its new owner)."""

    def __init__(self, worker: TransactionalWorker, consumer: AIOKafkaConsumer) -> None:
        self.worker = worker
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:
        if not revoked:  # joining without partitions (the first join): nothing read can be stale
            return
        names = ", ".join(sorted(partition_name(tp) for tp in revoked))
        if await self.worker.quiesced(HAND_OVER_WAIT_S):  # no await until the bump below: no batch starts between
            log.info("%s: partitions revoked after the batch in flight: %s", self.worker.role, names)
        else:
            log.warning("%s: the batch in flight did not finish within %.0f s; partitions %s handed over without "
                        "it (its records may be counted again by their next owner)", self.worker.role,
                        HAND_OVER_WAIT_S, names)
        self.worker.generation += 1

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("%s: partitions assigned: %s", self.worker.role,
                 ", ".join(sorted(partition_name(tp) for tp in assigned)) or "none")
        if assigned:  # no batch is handled until the worker is ready for them (records may already be fetched)
            async with self.worker.in_flight:
                await self.worker.take_over(self.consumer, set(assigned))


#: How long an assignment waits for the group's stable committed offsets before the worker gives up and exits.
STABLE_OFFSETS_TIMEOUT_MS = 60_000


class StableOffsets:
    """The group's committed offsets and metadata as read_committed readers must see them: once no transaction
    that commits offsets for the partitions is still being completed (KIP-447's ``require_stable``, which
    kafka-python sends and aiokafka does not). One kafka-python consumer that never joins the group, opened on
    first use and kept: closing one while its first metadata refresh is in flight logs a traceback."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.bootstrap, self.group_id = bootstrap, group_id
        self._reader: Any = None  # kafka.KafkaConsumer

    def fetch(self, partitions: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Those of ``partitions`` with a committed offset (blocking: call it in a thread)."""
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KafkaPartition

        if self._reader is None:
            self._reader = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group_id,
                                         enable_auto_commit=False, isolation_level="read_committed",
                                         client_id=f"{self.group_id}-offsets")
        out = {}
        for tp in partitions:
            committed = self._reader.committed(KafkaPartition(tp.topic, tp.partition), metadata=True,
                                               timeout_ms=STABLE_OFFSETS_TIMEOUT_MS)
            if committed is not None and committed.offset >= 0:
                out[tp] = OffsetAndMetadata(committed.offset, committed.metadata or "")
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close(autocommit=False)
            self._reader = None


def partition_name(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def offset_spans(batches: dict) -> dict[str, tuple[int, int]]:
    """``topic/partition -> [first, end)`` offsets a batch covered: the provenance of an sli-buckets message."""
    return {partition_name(tp): (messages[0].offset, messages[-1].offset + 1) for tp, messages in batches.items()}


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    """Stop a producer that may have failed: a dead sender re-raises its error on stop."""
    try:
        await producer.stop()
    except Exception:
        pass


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
                raise ServiceUnavailable(
                    f"cannot reach Kafka at {bootstrap} after {attempts} attempts: {exc}"
                ) from None
            log.warning("Kafka at %s not reachable (%s); retrying in 2 s", bootstrap, exc)
            await asyncio.sleep(2.0)


async def run_until_signalled(worker: TransactionalWorker) -> None:
    """SIGTERM and SIGINT finish the batch in hand, commit it, leave the group and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    await worker.run()
