"""``advmon matcher``: query fingerprints from every ingest worker's ``match-requests``, one query index.

With ``ADVMON_REMOTE_MATCHING=true`` ingest workers fingerprint queries but match none: the matcher holds the
one index over all of them (the keys of a Sybil attack land on different input partitions, so on different
workers; here their queries meet), matches each bucket in event-time order once the slowest input partition's
watermark has passed it (:mod:`monitor.detect.matcher`), and publishes on ``sli-buckets`` the counter changes
its verdicts make, with the match edges, under its own instance name; the alerter waits for it before closing
a window. Near-duplicates go to ``suspicious-inputs``. One transaction per batch, like ingest.

Its state survives restarts: ``match-requests`` is its log. Each batch commits its offset with the matcher's
checkpoint as the offset's metadata (:class:`~monitor.detect.matcher.MatcherCheckpoint`: where the oldest query
still indexed or waiting came in, how far buckets were matched, which query opened each index's oldest
generation), in the batch's transaction. When the partition is assigned (a start, a restart after SIGKILL, a
standby taking over), the matcher reads the requests from there up to the committed offset again and rebuilds
the indexes and the waiting queries, publishing nothing: what an attacker sent before a restart still counts
after it. Retention of ``match-requests`` must cover the index (``advmon topics``: 3 days or 2 GiB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.matcher import MatcherCheckpoint, MatchResult, OrderedMatcher
from monitor.errors import ServiceUnavailable, WireError
from monitor.settings import Settings
from monitor.telemetry.export import observe_index
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.topics import Topics
from streams.transactional import Output, TransactionalWorker, offset_spans, suspicious_output

log = logging.getLogger("advmon.matcher")
T = TypeVar("T")
#: Requests written this long before the idle limit are read again for their watermarks only, so a rebuilt
#: matcher waits for the same ingest workers as before.
SOURCES_LOOKBACK_S = 60.0
#: How long a rebuild may take to read match-requests (a day of requests at 10k queries/s reads in about a minute).
READ_TIMEOUT_S = 600.0


#: Requests a batch takes at most (each up to about 1,600 queries): a backlog is matched about 100,000 at a time.
BATCH_REQUESTS = 64


class MatcherWorker(TransactionalWorker):
    role = "matcher"
    batch_records = BATCH_REQUESTS

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.match_requests)
        self.alerter_topic = self.topics.sli_buckets
        self.matcher = OrderedMatcher(settings.matcher_settings())
        self.name = f"matcher-{settings.instance_id}"
        self.at: int | None = None  # the offset the matcher's state stands at (None: nothing read yet)
        self.partition: TopicPartition | None = None
        self.assigned_in = -1  # the rebalance generation the partition was last assigned in
        self.published = float("-inf")  # the watermark of its last sli-buckets message
        self.published_at = 0.0  # and when it was sent (wall time)

    async def handle(self, batches, consumer) -> list[Output]:
        started = time.perf_counter()
        now = time.time()
        outputs: list[Output] = []
        for _, message, request in self.decoded(batches, MatchRequestBatch.decode, self.topics.dead_letters,
                                                outputs):
            self.matcher.add(request, now, message.offset)
        self.at = max(m[-1].offset for m in batches.values()) + 1
        await self.advance_watermark(consumer, {})  # consumer lag
        outputs += self._outputs(self.matcher.advance(now), offset_spans(batches), now)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return outputs

    def commit_metadata(self) -> str:
        return self.matcher.checkpoint.to_json()

    def idle_outputs(self) -> tuple[list[Output], dict[TopicPartition, int]]:
        """No requests: a worker that went quiet (or died) stops holding the watermark after the idle time; the
        buckets it held are matched and the new watermark published, with the checkpoint. Without news, a
        message every third of the idle time still tells the alerter the matcher is alive, and lets it evaluate
        the sources that went quiet meanwhile (it evaluates when a message comes)."""
        if self.partition is None or self.at is None or self.at < 0 or self.generation != self.assigned_in:
            return [], {}  # nothing read yet, or the partition was revoked since
        now = time.time()
        quiet = now - self.published_at >= self.matcher.settings.idle_source_s / 3
        if self.matcher.watermark(now) <= self.published and not quiet:
            return [], {}
        return self._outputs(self.matcher.advance(now), {}, now), {self.partition: self.at}

    async def idle_failed(self, consumer) -> None:
        """What the failed transaction held is matched again from the last committed checkpoint."""
        self.at = None
        await self.take_over(consumer, consumer.assignment())

    async def assigned(self, partitions: set[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
                       ) -> None:
        """Rebuild what the last owner of the partition held when it committed, unless that was this state."""
        for tp in partitions:
            self.partition, self.assigned_in = tp, self.generation
            offset, metadata = (committed[tp].offset, committed[tp].metadata) if tp in committed else (-1, "")
            if offset == self.at:
                continue
            if offset < 0:  # nothing committed yet: a first start
                self.matcher, self.at = OrderedMatcher(self.settings.matcher_settings()), offset
                continue
            started = time.perf_counter()
            self.matcher, self.at = await self._rebuilt(tp, offset, metadata), offset
            log.info("matcher: rebuilt up to %s@%d in %.1f s: %d queries indexed, %d waiting for their bucket",
                     tp.topic, offset, time.perf_counter() - started, self.matcher.stored_queries,
                     self.matcher.pending_queries)

    async def _rebuilt(self, tp: TopicPartition, offset: int, metadata: str) -> OrderedMatcher:
        settings = self.settings.matcher_settings()
        try:
            checkpoint = MatcherCheckpoint.from_json(metadata)
        except WireError as exc:
            log.warning("matcher: the committed checkpoint is unreadable (%s); starting with an empty index", exc)
            checkpoint = None
        if checkpoint is None:
            log.warning("matcher: the committed offset carries no checkpoint (written by an older advmon); "
                        "starting with an empty index")
            return OrderedMatcher(settings)
        since = time.time() - settings.idle_source_s - SOURCES_LOOKBACK_S
        requests = await read_log(self.settings.kafka_bootstrap, tp, checkpoint.replay_from, offset,
                                  MatchRequestBatch.decode, since=since)
        # in a thread: the event loop keeps the group's heartbeats going through a long rebuild
        return await asyncio.to_thread(OrderedMatcher.restored, settings, checkpoint, requests)

    def _outputs(self, result: MatchResult, offsets: dict[str, tuple[int, int]], now: float) -> list[Output]:
        watermark = self.published = self.matcher.watermark(now)
        self.published_at = now
        message = SliBatch(instance=self.name, watermark=watermark, late=0, offsets=offsets, rows=result.rows,
                           flagged=result.flagged, role="matcher", edges=result.edges)
        observe_index(self.metrics, self.matcher.memory_bytes, self.matcher.lookback_s)
        if watermark > float("-inf"):
            self.metrics.watermark.set(watermark)
        return [*(o for chunk in message.chunks() for o in self.alerter_outputs(chunk, self.name.encode())),
                *(suspicious_output(self.topics.suspicious_inputs, doc) for doc in result.flagged.records())]


async def read_log(bootstrap: str, tp: TopicPartition, start: int, end: int, decode: Callable[[bytes], T],
                   role: str = "matcher", since: float | None = None) -> list[tuple[int, T, float]]:
    """The committed messages of ``tp`` before ``end``, decoded, with their offsets and the wall time they were
    written: from ``start``, and from the first one written after ``since`` (for the sources alive then) if earlier.
    Messages that retention already deleted are named in a warning; one that does not decode was dead-lettered
    when it was first read and is skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", max_partition_fetch_bytes=1 << 20)
    await consumer.start()
    try:
        consumer.assign([tp])
        recent = (await consumer.offsets_for_times({tp: int(since * 1000)})).get(tp) if since is not None else None
        first_kept = min(o for o in (start, recent.offset if recent else -1, end) if o >= 0)
        first = (await consumer.beginning_offsets([tp]))[tp]
        if start >= 0 and first > start:
            log.warning("%s: %s %d..%d were deleted by retention before this restart; the state is rebuilt without "
                        "them", role, tp.topic, start, first)
        consumer.seek(tp, max(first_kept, first))
        out: list[tuple[int, T, float]] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"{role}: could not read {tp.topic} up to its committed offset {end} "
                                         f"within {READ_TIMEOUT_S:.0f} s to rebuild its state")
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if message.offset >= end:
                    break
                try:
                    out.append((message.offset, decode(message.value or b""), message.timestamp / 1000.0))
                except WireError:
                    continue
        return out
    finally:
        await consumer.stop()
