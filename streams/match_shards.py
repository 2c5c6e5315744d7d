"""``advmon matcher --shards N --shard K|reduce``: the query index sharded by hash value over N shard processes and
one reduce (:mod:`monitor.detect.sharded_matcher`), on Kafka.

- Every shard and the reduce read all of ``match-requests`` (one partition, as one matcher does).
- The reduce decides the seals with its clock and writes them to ``match-control``; each shard follows them in
  order once it has read the requests they cover, and writes its round 1 to ``match-pairs``; the reduce writes its
  asks to ``match-control``, the shards their answers to ``match-pairs``; the reduce publishes one matcher's result
  on ``sli-buckets`` (as ``matcher-<instance>``, which the alerter waits for) and ``suspicious-inputs``.
- Each role is a consumer group of its own (``advmon-match-shard-K-of-N``, ``advmon-match-reduce``) and commits
  its read positions with its outputs in one transaction, with its checkpoint as the offsets' metadata. At an
  assignment (a start, a restart after SIGKILL, a standby taking over) it rebuilds from that checkpoint and its
  topics, publishing nothing again (:meth:`~monitor.detect.sharded_matcher.MatchShard.rebuilt`,
  :meth:`~monitor.detect.sharded_matcher.MatchReduce.rebuilt`).

The reduce leaves at most ``MAX_OPEN_SEALS`` seals of at most ``SEAL_LIMIT`` queries open, so what each shard keeps
between the rounds stays bounded (about 6 MB a seal on the realistic records).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import OffsetAndMetadata

from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.match_shards import PairAnswers, PairAsks, Seal, ShardPairs, decode_control, decode_reply
from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.matcher import MatchResult
from monitor.detect.sharded_matcher import MatchReduce, MatchShard, ReduceCheckpoint, ShardCheckpoint
from monitor.errors import ConfigError, WireError
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.http import Health
from streams.matcher import BATCH_REQUESTS, SOURCES_LOOKBACK_S, read_log
from streams.topics import Topics
from streams.transactional import Output, TransactionalWorker, offset_spans, suspicious_output

log = logging.getLogger("advmon.matcher")
#: The most queries a seal covers (but for queries later than the grace period, which the next seal takes).
SEAL_LIMIT = 4096
#: The most seals decided and not yet reduced.
MAX_OPEN_SEALS = 4
#: The largest round 1, asks or answers (``max.message.bytes`` of match-control and match-pairs: topics.py).
MAX_MESSAGE_BYTES = 64 << 20


def matcher_role(settings: Settings) -> str:
    """``"one"``, ``"reduce"`` or ``"shard"``, from ``matcher_shards`` and ``matcher_shard`` (checked together)."""
    shards, shard = settings.matcher_shards, settings.matcher_shard
    if shards == 1:
        if shard not in (None, "0"):
            raise ConfigError(f"--shard {shard} needs --shards (ADVMON_MATCHER_SHARDS) above 1")
        return "one"
    if shard is None:
        raise ConfigError(f"with {shards} matcher shards, name this process's role: --shard 0..{shards - 1} or "
                          "--shard reduce (ADVMON_MATCHER_SHARD)")
    if shard != "reduce" and int(shard) >= shards:
        raise ConfigError(f"--shard {shard} is not one of 0..{shards - 1}")
    return "reduce" if shard == "reduce" else "shard"


class ShardWorker(TransactionalWorker):
    """One shard: match-requests and match-control in, match-pairs out."""

    lingers = False  # every seal waits for each shard's round 1 and answers
    max_message_bytes = MAX_MESSAGE_BYTES
    batch_records = BATCH_REQUESTS
    assignor = RangePartitionAssignor  # each topic's one partition to the same member: a second one stands by

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.shards, self.shard = settings.matcher_shards, int(settings.matcher_shard or 0)
        self.role = f"match-shard-{self.shard}-of-{self.shards}"
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.match_requests)
        self.input_topics = [self.topics.match_requests, self.topics.match_control]
        self.matcher = MatchShard(settings.matcher_settings(), self.shards, self.shard)
        self.at: dict[str, int] | None = None  # the read positions the state stands at (None: not known)

    async def handle(self, batches, consumer) -> list[Output]:
        started = time.perf_counter()
        outputs: list[Output] = []
        for _, message, request in self.decoded(_only(batches, self.topics.match_requests), MatchRequestBatch.decode,
                                                 self.topics.dead_letters, outputs):
            self.matcher.add(request, now=0.0, offset=message.offset)
        replies: list[ShardPairs | PairAnswers] = []
        for _, message, control in self.decoded(_only(batches, self.topics.match_control), decode_control,
                                                 self.topics.dead_letters, outputs):
            replies += self.matcher.take(control, message.offset)
        replies += self.matcher.follow()
        self.at = {**(self.at or {}), **{tp.topic: m[-1].offset + 1 for tp, m in batches.items()}}
        await self.advance_watermark(consumer, {})  # consumer lag
        self.metrics.fingerprint_memory.set(self.matcher.memory_bytes)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return [*outputs, *(Output(self.topics.match_pairs, r.encode(), partition=0) for r in replies)]

    def commit_metadata(self) -> str:
        return self.matcher.shard_checkpoint.to_json()

    def held_positions(self) -> dict[TopicPartition, int]:
        return _held(self.at)

    async def assigned(self, partitions: set[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
                       ) -> None:
        positions = {tp.topic: committed[tp].offset if tp in committed else 0 for tp in partitions}
        if positions == self.at:
            return
        requests_tp = TopicPartition(self.topics.match_requests, 0)
        control_tp = TopicPartition(self.topics.match_control, 0)
        checkpoint = _checkpoint(ShardCheckpoint.from_json, committed.get(requests_tp), self.role)
        settings = self.settings.matcher_settings()
        if checkpoint is None:
            self.matcher, self.at = MatchShard(settings, self.shards, self.shard), positions
            return
        started = time.perf_counter()
        bootstrap = self.settings.kafka_bootstrap
        requests = await read_log(bootstrap, requests_tp, checkpoint.replay_from, positions[requests_tp.topic],
                                  MatchRequestBatch.decode, self.role)
        controls = await read_log(bootstrap, control_tp, checkpoint.control_from, positions[control_tp.topic],
                                  decode_control, self.role) if checkpoint.control_from >= 0 else []
        self.matcher = await asyncio.to_thread(  # the event loop keeps the group's heartbeats going meanwhile
            MatchShard.rebuilt, settings, self.shards, self.shard, checkpoint,
            [(o, r) for o, r, _ in requests], [(o, c) for o, c, _ in controls])
        self.at = positions
        log.info("%s: rebuilt up to %s in %.1f s: %d queries indexed, %d waiting, %d seals followed again",
                 self.role, _positions(positions), time.perf_counter() - started, self.matcher.stored_queries,
                 self.matcher.pending_queries, sum(isinstance(c, Seal) for _, c, _ in controls))


class ReduceWorker(TransactionalWorker):
    """The reduce: match-requests and match-pairs in; match-control, sli-buckets and suspicious-inputs out."""

    role = "match-reduce"
    lingers = False
    max_message_bytes = MAX_MESSAGE_BYTES
    batch_records = BATCH_REQUESTS
    assignor = RangePartitionAssignor

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.match_requests)
        self.input_topics = [self.topics.match_requests, self.topics.match_pairs]
        self.alerter_topic = self.topics.sli_buckets
        self.shards = settings.matcher_shards
        self.matcher = self._new()
        self.name = f"matcher-{settings.instance_id}"  # the alerter waits for it as for one matcher
        self.at: dict[str, int] | None = None
        self.assigned_in = -1
        self.published_at = 0.0  # when the last sli-buckets message was sent (wall time)

    def _new(self) -> MatchReduce:
        return MatchReduce(self.settings.matcher_settings(), self.shards, SEAL_LIMIT, MAX_OPEN_SEALS)

    async def handle(self, batches, consumer) -> list[Output]:
        started, now = time.perf_counter(), time.time()
        outputs: list[Output] = []
        for _, message, request in self.decoded(_only(batches, self.topics.match_requests), MatchRequestBatch.decode,
                                                 self.topics.dead_letters, outputs):
            self.matcher.add(request, now, message.offset)
        results: list[MatchResult] = []
        for _, message, reply in self.decoded(_only(batches, self.topics.match_pairs), decode_reply,
                                               self.topics.dead_letters, outputs):
            if isinstance(reply, ShardPairs):
                outputs += map(self._control, self.matcher.take_pairs(reply, message.offset))
            elif (result := self.matcher.take_answers(reply, message.offset)) is not None:
                results.append(result)
        self.at = {**(self.at or {}), **{tp.topic: m[-1].offset + 1 for tp, m in batches.items()}}
        await self.advance_watermark(consumer, {})  # consumer lag
        outputs += self._decided(now)
        outputs += self._results(results, offset_spans(batches), now)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return outputs

    def commit_metadata(self) -> str:
        return self.matcher.reduce_checkpoint.to_json()

    def held_positions(self) -> dict[TopicPartition, int]:
        return _held(self.at)

    def idle_outputs(self) -> tuple[list[Output], dict[TopicPartition, int]]:
        """No messages: a quiet ingest worker stops holding the watermark after the idle time, so seals may be due;
        a message every third of the idle time tells the alerter the matcher is alive."""
        if self.at is None or self.generation != self.assigned_in:
            return [], {}
        now = time.time()
        outputs = self._decided(now)
        if outputs or now - self.published_at >= self.matcher.settings.idle_source_s / 3:
            outputs += self._results([], {}, now)
        return outputs, _held(self.at)

    async def idle_failed(self, consumer) -> None:
        """What the failed transaction held is rebuilt from the last committed checkpoint."""
        self.at = None
        await self.take_over(consumer, consumer.assignment())

    async def assigned(self, partitions: set[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
                       ) -> None:
        self.assigned_in = self.generation
        positions = {tp.topic: committed[tp].offset if tp in committed else 0 for tp in partitions}
        if positions == self.at:
            return
        requests_tp = TopicPartition(self.topics.match_requests, 0)
        pairs_tp = TopicPartition(self.topics.match_pairs, 0)
        checkpoint = _checkpoint(ReduceCheckpoint.from_json, committed.get(requests_tp), self.role)
        if checkpoint is None:
            self.matcher, self.at = self._new(), positions
            return
        started = time.perf_counter()
        bootstrap = self.settings.kafka_bootstrap
        since = time.time() - self.settings.idle_source_seconds - SOURCES_LOOKBACK_S
        requests = await read_log(bootstrap, requests_tp, checkpoint.replay_from, positions[requests_tp.topic],
                                  MatchRequestBatch.decode, self.role, since)
        replies = await read_log(bootstrap, pairs_tp, checkpoint.pairs_from, positions[pairs_tp.topic],
                                 decode_reply, self.role) if checkpoint.pairs_from >= 0 else []
        self.matcher = await asyncio.to_thread(
            MatchReduce.rebuilt, self.settings.matcher_settings(), self.shards, checkpoint, requests,
            [(o, r) for o, r, _ in replies], SEAL_LIMIT, MAX_OPEN_SEALS)
        self.at = positions
        log.info("%s: rebuilt up to %s in %.1f s: %d queries waiting, %d seals open", self.role,
                 _positions(positions), time.perf_counter() - started, self.matcher.pending_queries,
                 self.matcher.open_seals)

    def _decided(self, now: float) -> list[Output]:
        seals = []
        while (seal := self.matcher.decide(now)) is not None:
            seals.append(seal)
        return [self._control(seal) for seal in seals]

    def _control(self, message: Seal | PairAsks) -> Output:
        return Output(self.topics.match_control, message.encode(), partition=0)

    def _results(self, results: list[MatchResult], offsets: dict[str, tuple[int, int]], now: float) -> list[Output]:
        result = MatchResult.concat(results) if results else MatchResult.empty()
        self.published_at = now
        message = SliBatch(instance=self.name, watermark=self.matcher.published_watermark(now), late=0,
                           offsets=offsets, rows=result.rows, flagged=result.flagged, role="matcher",
                           edges=result.edges)
        if message.watermark > float("-inf"):
            self.metrics.watermark.set(message.watermark)
        return [*(o for chunk in message.chunks() for o in self.alerter_outputs(chunk, self.name.encode())),
                *(suspicious_output(self.topics.suspicious_inputs, doc) for doc in result.flagged.records())]


def _held(at: dict[str, int] | None) -> dict[TopicPartition, int]:
    """Every input's position: the checkpoint goes with each of them, in every transaction."""
    return {TopicPartition(topic, 0): offset for topic, offset in (at or {}).items()}


def _only(batches: dict[TopicPartition, list], topic: str) -> dict[TopicPartition, list]:
    return {tp: messages for tp, messages in batches.items() if tp.topic == topic}


def _checkpoint(parse, committed: OffsetAndMetadata | None, role: str):
    """The checkpoint committed with the offsets (None: a first start, or one that cannot be read: said so)."""
    if committed is None or not committed.metadata:
        return None
    try:
        return parse(committed.metadata)
    except WireError as exc:
        log.warning("%s: the committed checkpoint is unreadable (%s); starting empty", role, exc)
        return None


def _positions(positions: dict[str, int]) -> str:
    return ", ".join(f"{topic}@{offset}" for topic, offset in sorted(positions.items()))

