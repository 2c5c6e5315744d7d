"""``advmon ingest``: batch-consume ``inference-logs``, run the vectorized engine, write its outputs.

One transaction per batch (see :mod:`streams.transactional`) holds the SLI aggregates for the
alerter, dead letters, suspicious inputs and, with remote scoring, the embeddings for the scorer.
Queries are matched in event-time order behind the worker's watermark, by its own matcher, or with
remote matching by ``advmon matcher`` (their fingerprints go to ``match-requests``). Each closed minute's
margin counts go to ``margin-counts``, and each worker adds every other worker's to the population it ranks
margins against. On SIGTERM the queries still waiting for their bucket are matched and published, and the open
minutes' margin counts, before the worker leaves. A batch is parsed and run through the engine in a thread while
the transaction of the batch before it goes on (``overlap_publish``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence

import msgspec
import numpy as np

from monitor.contracts.events import validate_event
from monitor.contracts.margin_counts import MarginCountsBatch
from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.score_requests import ScoreRequestBatch
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.engine import BatchResult, Engine
from monitor.detect.parsing import ParsedBatch, parse_batch
from monitor.detect.profiles import Profile
from monitor.settings import Settings
from monitor.telemetry.export import observe_batch, observe_index
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.margin_counts import MarginCountsReader
from streams.topics import Topics
from streams.transactional import (
    Output,
    TransactionalWorker,
    dead_letter_output,
    offset_spans,
    partition_name,
    suspicious_output,
)

log = logging.getLogger("advmon.ingest")


class IngestWorker(TransactionalWorker):
    role = "ingest"
    overlap_publish = True

    def __init__(self, settings: Settings, metrics: Metrics, health: Health, profile: Profile | None = None) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.inference_logs)
        self.alerter_topic = self.topics.sli_buckets
        self.engine = Engine(settings.engine_settings(), profile)
        self.watermark = float("-inf")
        self.dead = 0
        self.sender = f"{settings.instance_id}-{secrets.token_hex(4)}"  # this process, apart from a restarted one
        self.margin_reader: MarginCountsReader | None = None

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            if self.margin_reader is not None:
                await self.margin_reader.stop()

    async def learn_margins(self) -> None:
        """The other workers' margin counts published since the last batch (at the first, all the topic holds)."""
        if self.margin_reader is None:
            self.margin_reader = MarginCountsReader(self.settings.kafka_bootstrap, self.topics.margin_counts,
                                                    self.sender, self.metrics)
            self.engine.learn_margins(await self.margin_reader.start())
        else:
            self.engine.learn_margins(await self.margin_reader.poll())

    async def handle(self, batches, consumer) -> list[Output]:
        await self.learn_margins()
        started = time.perf_counter()
        records, sources = [], []
        for tp, messages in batches.items():
            for message in messages:
                records.append(message.value if message.value is not None else b"")
                sources.append(f"{partition_name(tp)}@{message.offset}")
        parsed = await asyncio.to_thread(parse_batch, records, sources, self.settings.max_record_bytes,
                                         not_after=time.time() + self.settings.max_future_skew_seconds)
        late = int((parsed.batch.ts < self.watermark - self.settings.grace_seconds).sum())
        self.watermark = await self.advance_watermark(consumer, _max_ts_per_partition(batches, parsed))
        parsed_at = time.perf_counter()
        # matches the buckets the watermark closed
        result = await asyncio.to_thread(self.engine.process, parsed.batch, self.watermark)
        engine_at = time.perf_counter()
        self.dead += len(parsed.dead)
        observe_batch(self.metrics, result, parsed.batch, late)
        observe_index(self.metrics, self.engine.fingerprint_memory_bytes, self.engine.fingerprint_lookback_s)
        for letter in parsed.dead:
            self.metrics.dead_letters.labels(reason=letter.category).inc()
        self.metrics.batch_seconds.labels(stage="parse").observe(parsed_at - started)
        self.metrics.batch_seconds.labels(stage="engine").observe(engine_at - parsed_at)
        return self._outputs(offset_spans(batches), records, parsed, result, late)

    def final_outputs(self) -> list[Output]:
        """On the way out: the queries the own matcher still holds, matched now rather than lost, and the open minutes'
        margin counts."""
        result = self.engine.finish()
        if not (len(result.verdicts) or result.score_groups or result.margin_counts):
            return []
        minutes = len({(c.model, int(b)) for c in result.margin_counts for b in np.unique(c.bucket).tolist()})
        log.info("ingest: before stopping, %d waiting queries matched, %d embeddings released to the scorer, the "
                 "margin counts of %d open minutes published", len(result.verdicts),
                 sum(len(g) for g in result.score_groups), minutes)
        return self._outputs({}, [], parse_batch([]), result, 0)

    def _outputs(self, offsets: dict[str, tuple[int, int]], records: list[bytes], parsed: ParsedBatch,
                 result: BatchResult, late: int) -> list[Output]:
        t, instance, s = self.topics, self.settings.instance_id, self.settings
        message = SliBatch(
            instance=instance, watermark=self.watermark, late=late, offsets=offsets, rows=result.rows,
            flagged=result.flagged, remote_scoring=s.remote_scoring, edges=result.edges,
            remote_matching=s.remote_matching, partitions=self.partition_marks,
            inputs=(self.input_topic, self.input_partitions))
        outputs = self.alerter_outputs(message, instance.encode())
        matches = None
        if s.remote_matching:
            matches = MatchRequestBatch(instance, self.watermark, result.match_groups, self.partition_marks,
                                        (self.input_topic, self.input_partitions))
        if s.remote_scoring:  # with remote matching too, the queries go through the scorer (score_requests)
            request = ScoreRequestBatch(instance, self.watermark, result.score_groups, matches)
            outputs += [Output(t.score_requests, chunk.encode(), instance.encode()) for chunk in request.chunks()]
        elif matches is not None:
            outputs += [Output(t.match_requests, chunk.encode(), instance.encode()) for chunk in matches.chunks()]
        if result.margin_counts:
            outputs += [Output(t.margin_counts, chunk.encode(), instance.encode())
                        for chunk in MarginCountsBatch(self.sender, result.margin_counts).chunks()]
        outputs += [dead_letter_output(t.dead_letters, letter) for letter in parsed.dead]
        docs = result.flagged.records()
        if self.settings.store_raw_inputs:
            docs = with_raw_inputs(docs, records, parsed)
        outputs += [suspicious_output(t.suspicious_inputs, doc) for doc in docs]
        return outputs


def _max_ts_per_partition(batches: dict, parsed: ParsedBatch) -> dict[str, float]:
    """Records were parsed partition by partition: each valid event's record index names its partition."""
    sizes = [len(messages) for messages in batches.values()]
    partition = np.repeat(np.arange(len(sizes)), sizes)[parsed.valid]
    latest = np.full(len(sizes), -np.inf)
    np.maximum.at(latest, partition, parsed.batch.ts)
    return {partition_name(tp): float(ts) for tp, ts in zip(batches, latest.tolist(), strict=True) if ts > -np.inf}


def with_raw_inputs(docs: list[dict], records: Sequence[bytes], parsed: ParsedBatch) -> list[dict]:
    """The forensics corpus with the flagged events' raw inputs (``ADVMON_STORE_RAW_INPUTS=true`` only;
    otherwise a suspicious input is known by its fingerprint alone), decoded again from their records. The
    near-duplicates of queries of earlier batches (matched once their bucket closed) are not among the records:
    they keep their fingerprint only."""
    if not docs:
        return docs
    row = {event_id: i for i, event_id in enumerate(parsed.batch.event_id.tolist())}
    for doc in docs:
        if doc["event_id"] not in row:
            continue
        raw = validate_event(records[int(parsed.valid[row[doc["event_id"]]])]).input
        doc["input"] = None if raw is None else {k: v for k, v in msgspec.to_builtins(raw).items() if v is not None}
    return docs
