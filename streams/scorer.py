"""``advmon scorer``: embeddings from ``score-requests`` scored against the reference profile.

It publishes, on ``scores``, the counter changes its flags make (see :mod:`monitor.score_requests`)
as sli-buckets messages under its own instance name; the alerter reads them beside ``sli-buckets``
and waits for the scorer before closing a window. Suspicious inputs it finds go to ``suspicious-inputs``. One transaction
per batch, like ingest. Backend: torch on CUDA when present (``ADVMON_SCORER_BACKEND=auto``), else numpy.
"""

from __future__ import annotations

import logging
import time

from monitor.config import Settings
from monitor.deadletter import DeadLetter
from monitor.metrics import Metrics
from monitor.score_requests import ScoreRequestBatch
from monitor.scorer import EmbeddingScorer
from monitor.scoring import Profile
from monitor.sli import SliRows
from monitor.torch_scoring import torch_device
from monitor.wire import Evidence, SliBatch, WireError
from streams.http import Health
from streams.topics import Topics
from streams.transactional import (Output, TransactionalWorker, dead_letter_output, offset_spans, partition_name,
                                  suspicious_output)

log = logging.getLogger("advmon.scorer")


class ScorerWorker(TransactionalWorker):
    role = "scorer"

    def __init__(self, settings: Settings, metrics: Metrics, health: Health, profile: Profile) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.score_requests)
        try:
            device = torch_device(settings.scorer_backend)
        except ValueError as exc:
            raise SystemExit(f"advmon scorer: {exc}") from None
        self.scorer = EmbeddingScorer(profile, settings.bucket_seconds, device)
        self.name = f"scorer-{settings.instance_id}"
        log.info("scoring embeddings with %s", self.scorer.backend)

    async def handle(self, batches, consumer) -> list[Output]:
        started = time.perf_counter()
        outputs, watermarks, tables, evidence = [], {}, [], []
        for tp, messages in batches.items():
            for message in messages:
                try:
                    request = ScoreRequestBatch.decode(message.value or b"")
                except WireError as exc:
                    letter = DeadLetter(str(exc), message.value or b"", f"{partition_name(tp)}@{message.offset}")
                    outputs.append(dead_letter_output(self.topics.dead_letters, letter))
                    self.metrics.dead_letters.labels(reason="other").inc()
                    continue
                result = self.scorer.score(request)
                tables.append(result.rows)
                evidence.append(result.evidence)
                self.metrics.scored.labels(outcome="scored").inc(result.scored)
                self.metrics.scored.labels(outcome="unprofiled").inc(result.unprofiled)
                watermarks[partition_name(tp)] = max(watermarks.get(partition_name(tp), float("-inf")),
                                                     request.watermark)
        watermark = await self.advance_watermark(consumer, watermarks)
        outputs.append(self._sli_message(batches, tables, evidence, watermark))
        outputs += [suspicious_output(self.topics.suspicious_inputs, {
            "event_id": e, "model": m, "client_id": c, "reason": "anomalous-embedding", "fingerprint": f})
            for ev in evidence for e, m, c, f in zip(ev.event_id, ev.model, ev.client_id, ev.fingerprint)]
        self.metrics.batch_seconds.labels(stage="score").observe(time.perf_counter() - started)
        return outputs

    def _sli_message(self, batches, tables, evidence, watermark: float) -> Output:
        message = SliBatch(
            instance=self.name, watermark=watermark, late=0,
            offsets=offset_spans(batches),
            rows=SliRows.concat(tables).combined(), evidence=Evidence.concat(evidence), role="scorer")
        return Output(self.topics.scores, message.encode(), self.name.encode())
