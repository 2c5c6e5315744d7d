"""``advmon scorer``: embeddings from ``score-requests`` scored against the reference profile.

It publishes, on ``scores``, the counter changes its flags make (see :mod:`monitor.contracts.score_requests`)
as sli-buckets messages under its own instance name; the alerter reads them beside ``sli-buckets``
and waits for the scorer before closing a window. Suspicious inputs it finds go to ``suspicious-inputs``.
One transaction per batch, like ingest. Backend: torch on CUDA when present (``ADVMON_SCORER_BACKEND=auto``),
else numpy. With remote matching on too, each request carries its batch's queries: the scorer passes them on to
``match-requests`` in the same transaction, the events it flagged marked anomalous, so the matcher and the scorer
never both take an event off the clean count. A batch is decoded and scored in a thread while the transaction of
the batch before it goes on (``overlap_publish``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.score_requests import ScoreRequestBatch
from monitor.contracts.sli import SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.profiles import Profile
from monitor.detect.scorer import EmbeddingScorer
from monitor.detect.torch_profiles import torch_device
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.topics import Topics
from streams.transactional import (
    Output,
    TransactionalWorker,
    offset_spans,
    partition_name,
    suspicious_output,
)

log = logging.getLogger("advmon.scorer")


class ScorerWorker(TransactionalWorker):
    role = "scorer"
    overlap_publish = True

    def __init__(self, settings: Settings, metrics: Metrics, health: Health, profile: Profile) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.score_requests)
        self.alerter_topic = self.topics.scores
        device = torch_device(settings.scorer_backend)
        self.scorer = EmbeddingScorer(profile, settings.bucket_seconds, device)
        self.name = f"scorer-{settings.instance_id}"
        log.info("scoring embeddings with %s", self.scorer.backend)

    async def handle(self, batches, consumer) -> list[Output]:
        started = time.perf_counter()
        outputs, watermarks, tables, found = await asyncio.to_thread(self._score, batches)
        watermark = await self.advance_watermark(consumer, watermarks)
        flagged = FlaggedEvents.concat(found)
        message = SliBatch(instance=self.name, watermark=watermark, late=0, offsets=offset_spans(batches),
                           rows=SliRows.concat(tables).combined(), flagged=flagged, role="scorer")
        outputs += self.alerter_outputs(message, self.name.encode())
        outputs += [suspicious_output(self.topics.suspicious_inputs, doc) for doc in flagged.records()]
        self.metrics.batch_seconds.labels(stage="score").observe(time.perf_counter() - started)
        return outputs

    def _score(self, batches) -> tuple[list[Output], dict[str, float], list[SliRows], list[FlaggedEvents]]:
        """Decode and score each request of a batch (in a thread): the queries passed on to the matcher and the dead
        letters, each partition's latest watermark, and the requests' rows and flags."""
        outputs: list[Output] = []
        watermarks: dict[str, float] = {}
        tables: list[SliRows] = []
        found: list[FlaggedEvents] = []
        for tp, _, request in self.decoded(batches, ScoreRequestBatch.decode, self.topics.dead_letters, outputs):
            result = self.scorer.score(request)
            if result.matches is not None:  # in read order: each ingest worker's queries reach the matcher in order
                outputs += [Output(self.topics.match_requests, chunk.encode(), request.instance.encode())
                            for chunk in result.matches.chunks()]
            tables.append(result.rows)
            found.append(result.flagged)
            self.metrics.scored.labels(outcome="scored").inc(result.scored)
            self.metrics.scored.labels(outcome="unprofiled").inc(result.unprofiled)
            watermarks[partition_name(tp)] = max(watermarks.get(partition_name(tp), float("-inf")), request.watermark)
        return outputs, watermarks, tables, found
