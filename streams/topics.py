"""The topics advmon reads and writes, and an idempotent ``advmon topics create``.

Partitioning follows the design: inference records are keyed by client_id and spread over
``input_partitions``; the alerter's inputs (small aggregates) sit in ``alerter_partitions`` partitions, one by
default (one faust worker sees them in order), more to shard the alerter by (model, client) with a model stage
on partition 0 (:mod:`monitor.contracts.shards`); suspicious inputs are compacted by fingerprint.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from monitor.errors import ConfigError, ServiceUnavailable
from monitor.settings import Settings

log = logging.getLogger("advmon.topics")
WEEK_MS = 7 * 24 * 3600 * 1000
#: The matcher rebuilds its index from match-requests: keep what two generations of the index can hold
#: (``ADVMON_FINGERPRINT_GENERATION_HOURS``, 24 by default, or 2 x 50,000 queries), whichever is less.
MATCH_REQUESTS_RETENTION = {"retention.ms": str(3 * 24 * 3600 * 1000), "retention.bytes": str(2 << 30)}
#: The sharded matcher's messages: a seal's round 1 from one shard is 28 bytes a pair. The largest message was
#: 0.5-0.65 MB for seals of 4,096 realistic queries (bench/sharding.py) and 7.5-8 MB for a seal of 4,096
#: near-identical attack queries, each paired with up to ``postings_cap`` earlier ones (measured with 2 and 4
#: shards): past the broker's default 1 MB message limit.
MATCH_SHARDS_CONFIG = {**MATCH_REQUESTS_RETENTION, "max.message.bytes": str(64 << 20)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


@dataclass(frozen=True)
class Topics:
    inference_logs: str
    dead_letters: str
    sli_buckets: str
    score_requests: str
    scores: str
    suspicious_inputs: str
    alerts: str
    match_requests: str
    margin_counts: str
    match_control: str
    match_pairs: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p = settings.topic_prefix
        return cls(f"{p}inference-logs", f"{p}inference-logs.dlq", f"{p}sli-buckets", f"{p}score-requests",
                   f"{p}scores", f"{p}suspicious-inputs", f"{p}alerts", f"{p}match-requests", f"{p}margin-counts",
                   f"{p}match-control", f"{p}match-pairs")

    def specs(self, input_partitions: int, alerter_partitions: int = 1) -> list[TopicSpec]:
        keep = {"retention.ms": str(WEEK_MS)}
        return [
            TopicSpec(self.inference_logs, input_partitions, purpose="inference records, keyed by client_id"),
            TopicSpec(self.dead_letters, 1, {"retention.ms": str(4 * WEEK_MS)}, "rejected records with their reason"),
            TopicSpec(self.sli_buckets, alerter_partitions, keep,
                      "per-batch SLI aggregates, ingest -> alerter (a part per alerter partition)"),
            TopicSpec(self.score_requests, input_partitions, {"retention.ms": str(24 * 3600 * 1000)},
                      "embeddings to score, ingest -> scorer"),
            TopicSpec(self.scores, alerter_partitions, keep,
                      "the scorer's counter changes (sli-buckets messages), scorer -> alerter"),
            TopicSpec(self.suspicious_inputs, 3, {"cleanup.policy": "compact"},
                      "flagged inputs, keyed by fingerprint (compaction dedupes near-identical ones)"),
            TopicSpec(self.alerts, 1, {"retention.ms": str(4 * WEEK_MS)}, "the alert contract, keyed by dedup_key"),
            TopicSpec(self.match_requests, 1, MATCH_REQUESTS_RETENTION,
                      "query fingerprints to match, ingest -> matcher (one partition: one matcher sees every query; "
                      "the matcher's log, read again at a restart)"),
            TopicSpec(self.match_control, 1, MATCH_SHARDS_CONFIG,
                      "the sharded matcher's seals and asks, reduce -> every shard (a restarted shard reads the seals "
                      "again from its index's oldest generation)"),
            TopicSpec(self.match_pairs, 1, MATCH_SHARDS_CONFIG,
                      "the sharded matcher's pair counts, shards -> reduce (a restarted reduce reads its open seals' "
                      "again)"),
            TopicSpec(self.margin_counts, 1, {"retention.ms": str(24 * 3600 * 1000)},
                      "each ingest worker's margin counts, read by every other (a day: four half-lives of the "
                      "margin population)"),
        ]


def partition_counts(bootstrap: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Every topic's partition count."""
    admin = _admin(bootstrap, timeout_s)
    try:
        return _counts(admin)
    finally:
        admin.close()


def _admin(bootstrap: str, timeout_s: float):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="advmon-topics",
                            request_timeout_ms=int(timeout_s * 1000))


def _counts(admin) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}


class SpanReader:
    """Reads the committed messages of a span of a partition, beside a consumer group (no group of its own, no
    commits): transaction markers and aborted messages are passed over, as a read_committed reader does. One
    connection, opened at the first read and kept; reads are serialized (callers may be threads). Blocking.

    ``read(topic, partition, start, end)`` gives at most ``limit`` messages as (offset, value), all below ``end``,
    and the offset to read on from (``end`` once the span is read)."""

    def __init__(self, bootstrap: str, limit: int = 1000, timeout_s: float = 30.0) -> None:
        self.bootstrap, self.limit, self.timeout_s = bootstrap, limit, timeout_s
        self._consumer = None
        self._lock = threading.Lock()
        self.reads = 0  # spans read (for the logs: how often the check went to the broker)

    def read(self, topic: str, partition: int, start: int, end: int) -> tuple[list[tuple[int, bytes]], int]:
        from kafka import TopicPartition

        with self._lock:
            consumer = self._open()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            self.reads += 1
            found: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + self.timeout_s
            while len(found) < self.limit and consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(f"{topic}/{partition}: offsets {start}-{end} not read within "
                                             f"{self.timeout_s:.0f} s")
                for record in consumer.poll(timeout_ms=500, max_records=self.limit - len(found)).get(tp, []):
                    if record.offset >= end:
                        return found, end
                    found.append((record.offset, record.value))
            return found, min(consumer.position(tp), end)

    def _open(self):
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                           isolation_level="read_committed", group_id=None,
                                           client_id="advmon-span-reader", auto_offset_reset="earliest")
        return self._consumer

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def check_alerter_partitions(settings: Settings) -> None:
    """ConfigError where ``sli-buckets`` or ``scores`` exists with another partition count than the alerter's
    setting (its state is partitioned alike); a warning where the broker cannot be asked yet."""
    topics = Topics.from_settings(settings)
    try:
        counts = partition_counts(settings.kafka_bootstrap)
    except Exception as exc:  # noqa: BLE001 (kafka-python raises many kinds; the check is advisory then)
        log.warning("could not check the partitions of %s (%s: %s)", topics.sli_buckets, type(exc).__name__, exc)
        return
    for name in (topics.sli_buckets, topics.scores):
        if name in counts and counts[name] != settings.alerter_partitions:
            raise ConfigError(f"{name} has {counts[name]} partitions but ADVMON_ALERTER_PARTITIONS is "
                              f"{settings.alerter_partitions}: set it to the topic's count (a changed count needs new "
                              "topics and a new alerter state: another ADVMON_TOPIC_PREFIX)")


def create_topics(bootstrap: str, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[tuple[TopicSpec, str]]:
    """Create missing topics; report existing ones (and a partition count that differs) without failing."""
    from kafka.admin import NewTopic

    admin = _admin(bootstrap, timeout_s)
    try:
        existing = _counts(admin)
        outcome = []
        missing = [s for s in specs if s.name not in existing]
        if missing:
            admin.create_topics([NewTopic(s.name, s.partitions, 1, topic_configs=s.config) for s in missing],
                                timeout_ms=int(timeout_s * 1000))
        for spec in specs:
            if spec.name not in existing:
                outcome.append((spec, "created"))
            elif existing[spec.name] != spec.partitions:
                outcome.append(
                    (spec, f"exists with {existing[spec.name]} partitions (wanted {spec.partitions}; left as is)")
                )
            else:
                outcome.append((spec, "exists"))
        return outcome
    finally:
        admin.close()
