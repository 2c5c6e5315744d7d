"""``advmon matcher``: query fingerprints from every ingest worker's ``match-requests``, one query index.

With ``ADVMON_REMOTE_MATCHING=true`` ingest workers fingerprint queries but match none: the matcher holds the
one index over all of them (the keys of a Sybil attack land on different input partitions, so on different
workers; here their queries meet), matches each bucket in event-time order once the slowest input partition's
watermark has passed it (:mod:`monitor.detect.matcher`), and publishes on ``sli-buckets`` the counter changes
its verdicts make, with the match edges, under its own instance name; the alerter waits for it before closing
a window. Near-duplicates go to ``suspicious-inputs``. One transaction per batch, like ingest; on SIGTERM the
queries still waiting for their bucket are matched and published before it leaves. Its index is soft state:
lost at a restart, like an ingest worker's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.matcher import MatchResult, OrderedMatcher
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.topics import Topics
from streams.transactional import Output, TransactionalWorker, offset_spans, suspicious_output

log = logging.getLogger("advmon.matcher")


class MatcherWorker(TransactionalWorker):
    role = "matcher"

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.match_requests)
        self.matcher = OrderedMatcher(settings.matcher_settings())
        self.name = f"matcher-{settings.instance_id}"

    async def handle(self, batches, consumer) -> list[Output]:
        started = time.perf_counter()
        now = time.monotonic()
        outputs: list[Output] = []
        for _, request in self.decoded(batches, MatchRequestBatch.decode, self.topics.dead_letters, outputs):
            self.matcher.add(request, now)
        await self.advance_watermark(consumer, {})  # consumer lag
        outputs += self._outputs(self.matcher.advance(now), offset_spans(batches), now)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return outputs

    def final_outputs(self) -> Sequence[Output]:
        """On the way out: the queries still waiting for their bucket, matched now rather than lost."""
        result = self.matcher.flush()
        log.info("matcher: %d waiting queries matched before stopping", len(result.verdicts))
        return self._outputs(result, {}, time.monotonic()) if len(result.verdicts) else []

    def _outputs(self, result: MatchResult, offsets: dict[str, tuple[int, int]], now: float) -> list[Output]:
        watermark = self.matcher.watermark(now)
        message = SliBatch(instance=self.name, watermark=watermark, late=0, offsets=offsets, rows=result.rows,
                           flagged=result.flagged, role="matcher", edges=result.edges)
        self.metrics.fingerprint_memory.set(self.matcher.memory_bytes)
        if watermark > float("-inf"):
            self.metrics.watermark.set(watermark)
        return [Output(self.topics.sli_buckets, message.encode(), self.name.encode()),
                *(suspicious_output(self.topics.suspicious_inputs, doc) for doc in result.flagged.records())]
