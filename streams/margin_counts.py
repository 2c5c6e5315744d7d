"""Every ingest worker's margin counts, read by every other (topic ``margin-counts``): no consumer group, every
partition, committed messages only, from the start of the topic's retention, so that a worker that starts or
restarts ranks against what every worker's traffic taught the population (``monitor.detect.margin_ranks``)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from monitor.contracts.margin_counts import MarginCounts, MarginCountsBatch
from monitor.errors import ConfigError, WireError
from monitor.telemetry.metrics import Metrics
from streams.topics import partition_counts
from streams.transactional import FETCH_MAX_WAIT_MS

log = logging.getLogger("advmon.ingest")


class MarginCountsReader:
    """``start`` reads what the topic holds (up to ``catch_up_s``), then each ``poll`` what came since, without
    waiting; a worker's own messages (its ``sender``) are passed over: it counted them itself."""

    def __init__(self, bootstrap: str, topic: str, sender: str, metrics: Metrics | None = None,
                 catch_up_s: float = 30.0) -> None:
        self.bootstrap, self.topic, self.sender, self.catch_up_s = bootstrap, topic, sender, catch_up_s
        self.metrics = metrics or Metrics()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest", isolation_level="read_committed",
                                          fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        self.messages = 0  # other workers' messages taken in
        self.refused = 0  # messages that did not decode (logged, skipped)

    async def start(self) -> list[MarginCounts]:
        """Every partition assigned from the beginning; what they hold now, read."""
        count = (await asyncio.to_thread(partition_counts, self.bootstrap)).get(self.topic)
        if count is None:
            raise ConfigError(f"topic {self.topic} does not exist: run `advmon topics create` (ingest workers share "
                              "their margin counts through it)")
        await self._consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(count)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        ends = await self._consumer.end_offsets(partitions)
        counts: list[MarginCounts] = []
        deadline = time.monotonic() + self.catch_up_s
        while time.monotonic() < deadline and any([await self._consumer.position(tp) < ends[tp] for tp in ends]):
            counts += self._taken(await self._consumer.getmany(timeout_ms=200))
        log.info("ingest: %d margin-counts messages of other workers read at the start", self.messages)
        return counts

    async def poll(self) -> list[MarginCounts]:
        return self._taken(await self._consumer.getmany(timeout_ms=0))

    async def stop(self) -> None:
        await self._consumer.stop()

    def _taken(self, batches: dict) -> list[MarginCounts]:
        counts: list[MarginCounts] = []
        for messages in batches.values():
            for message in messages:
                try:
                    batch = MarginCountsBatch.decode(message.value or b"")
                except WireError as exc:
                    self.refused += 1
                    self.metrics.margin_counts.labels(outcome="refused").inc()
                    log.warning("ingest: %s@%d skipped: %s", self.topic, message.offset, exc)
                    continue
                if batch.sender != self.sender:
                    self.messages += 1
                    self.metrics.margin_counts.labels(outcome="added").inc()
                    counts += batch.parts
        return counts
