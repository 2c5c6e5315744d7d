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
from typing import Any

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
from monitor.telemetry.export import observe_index
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


class _MatchRole(TransactionalWorker):
    """What a shard and the reduce share: inputs of one partition each, read whole; a checkpoint committed on every
    one of them with each transaction; a rebuild from it and the topics when they are assigned."""

    lingers = False  # every seal waits for each shard's round 1 and answers
    max_message_bytes = MAX_MESSAGE_BYTES
    batch_records = BATCH_REQUESTS
    assignor = RangePartitionAssignor  # each topic's one partition to the same member: a second one stands by
    checkpoint_type: Any = None  # ShardCheckpoint or ReduceCheckpoint

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.topics = Topics.from_settings(settings)
        super().__init__(settings, metrics, health, self.topics.match_requests)
        self.shards = settings.matcher_shards
        self.at: dict[str, int] | None = None  # the read positions the state stands at (None: not known)
        self.assigned_in = -1  # the rebalance generation the partitions were last assigned in

    def held_positions(self) -> dict[TopicPartition, int]:
        return _held(self.at)

    def _read_past(self, batches: dict[TopicPartition, list]) -> None:
        """The state now stands past every message of ``batches``."""
        self.at = {**(self.at or {}), **{tp.topic: m[-1].offset + 1 for tp, m in batches.items()}}

    async def assigned(self, partitions: set[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
                       ) -> None:
        self.assigned_in = self.generation
        positions = {tp.topic: committed[tp].offset if tp in committed else 0 for tp in partitions}
        if positions == self.at:
            return
        metadata = committed.get(TopicPartition(self.topics.match_requests, 0))
        checkpoint = _checkpoint(self.checkpoint_type.from_json, metadata, self.role)
        started = time.perf_counter()
        self.matcher = self._new() if checkpoint is None else await self._rebuilt(checkpoint, positions)
        self.at = positions
        if checkpoint is not None:
            log.info("%s: rebuilt up to %s in %.1f s: %s", self.role, _positions(positions),
                     time.perf_counter() - started, self._summary())

    def _new(self) -> Any:
        raise NotImplementedError

    async def _rebuilt(self, checkpoint: Any, positions: dict[str, int]) -> Any:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    async def _read(self, topic: str, start: int, positions: dict[str, int], decode, since: float | None = None
                    ) -> list:
        """The committed messages of ``topic`` up to where the state stands: from ``start`` (none where it is -1), and
        from the first written after ``since`` (wall time), if earlier."""
        if start < 0 and since is None:
            return []
        return await read_log(self.settings.kafka_bootstrap, TopicPartition(topic, 0), start, positions[topic],
                              decode, self.role, since)


class ShardWorker(_MatchRole):
    """One shard: match-requests and match-control in, match-pairs out."""

    checkpoint_type = ShardCheckpoint

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        self.shard = int(settings.matcher_shard or 0)
        self.role = f"match-shard-{self.shard}-of-{settings.matcher_shards}"
        super().__init__(settings, metrics, health)
        self.input_topics = [self.topics.match_requests, self.topics.match_control]
        self.matcher = self._new()

    def _new(self) -> MatchShard:
        return MatchShard(self.settings.matcher_settings(), self.shards, self.shard)

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
        self._read_past(batches)
        await self.advance_watermark(consumer, {})  # consumer lag
        observe_index(self.metrics, self.matcher.memory_bytes, self.matcher.lookback_s)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return [*outputs, *(Output(self.topics.match_pairs, r.encode(), partition=0) for r in replies)]

    def commit_metadata(self) -> str:
        return self.matcher.shard_checkpoint.to_json()

    async def _rebuilt(self, checkpoint: ShardCheckpoint, positions: dict[str, int]) -> MatchShard:
        requests = await self._read(self.topics.match_requests, checkpoint.replay_from, positions,
                                    MatchRequestBatch.decode)
        controls = await self._read(self.topics.match_control, checkpoint.control_from, positions, decode_control)
        return await asyncio.to_thread(  # the event loop keeps the group's heartbeats going meanwhile
            MatchShard.rebuilt, self.settings.matcher_settings(), self.shards, self.shard, checkpoint,
            [(o, r) for o, r, _ in requests], [(o, c) for o, c, _ in controls])

    def _summary(self) -> str:
        return (f"{self.matcher.stored_queries} queries indexed, {self.matcher.pending_queries} waiting, "
                f"{self.matcher.followed + 1} seals followed")


class ReduceWorker(_MatchRole):
    """The reduce: match-requests and match-pairs in; match-control, sli-buckets and suspicious-inputs out."""

    role = "match-reduce"
    checkpoint_type = ReduceCheckpoint

    def __init__(self, settings: Settings, metrics: Metrics, health: Health) -> None:
        super().__init__(settings, metrics, health)
        self.input_topics = [self.topics.match_requests, self.topics.match_pairs]
        self.alerter_topic = self.topics.sli_buckets
        self.matcher = self._new()
        self.name = f"matcher-{settings.instance_id}"  # the alerter waits for it as for one matcher
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
        self._read_past(batches)
        await self.advance_watermark(consumer, {})  # consumer lag
        outputs += self._decided(now)
        outputs += self._results(results, offset_spans(batches), now)
        self.metrics.batch_seconds.labels(stage="match").observe(time.perf_counter() - started)
        return outputs

    def commit_metadata(self) -> str:
        return self.matcher.reduce_checkpoint.to_json()

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

    async def _rebuilt(self, checkpoint: ReduceCheckpoint, positions: dict[str, int]) -> MatchReduce:
        since = time.time() - self.settings.idle_source_seconds - SOURCES_LOOKBACK_S  # the sources alive then
        requests = await self._read(self.topics.match_requests, checkpoint.replay_from, positions,
                                    MatchRequestBatch.decode, since)
        replies = await self._read(self.topics.match_pairs, checkpoint.pairs_from, positions, decode_reply)
        return await asyncio.to_thread(
            MatchReduce.rebuilt, self.settings.matcher_settings(), self.shards, checkpoint, requests,
            [(o, r) for o, r, _ in replies], SEAL_LIMIT, MAX_OPEN_SEALS)

    def _summary(self) -> str:
        return f"{self.matcher.pending_queries} queries waiting, {self.matcher.open_seals} seals open"

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

