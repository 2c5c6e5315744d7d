"""``advmon alerter``: the faust-streaming app that turns ``sli-buckets`` into alerts.

Two agents, each ``concurrency=1`` (faust's offset commits can skip messages otherwise):

* ``evaluate`` reads ``sli-buckets`` and the scorer's ``scores`` (``read_committed``: only what the
  ingest and scorer transactions committed),
  keeps windows, sources and progress in the table ``state`` (changelog-backed; see
  :mod:`monitor.alerting.durable` for why redelivery and restarts neither lose nor repeat anything) and
  writes alert transitions to the ``alerts`` topic.
* ``deliver`` reads ``alerts``, drops transitions it already delivered (table ``delivered``, by
  ``alert_id``), runs inhibit -> route -> group -> dedupe and hands notifications to the sinks.

Sharded (``ADVMON_ALERTER_PARTITIONS`` > 1, :mod:`monitor.contracts.shards`): ``sli-buckets``, ``scores`` and the
``state`` changelog have that many partitions, and several alerters (each its own ``--instance``) share them
through faust's consumer group, each table partition with a standby replica on another alerter. Every partition
the worker owns has its own :class:`DurableAlerter` over its part of ``state`` (partition 0 the model stage, the
others client shards); a partition taken from a killed alerter is rebuilt from its changelog, as after a restart.

This module is the only place faust is imported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP

from monitor.alerting.durable import DurableAlerter
from monitor.alerting.shard_store import PartitionStore
from monitor.contracts.alerts import Alert
from monitor.contracts.shards import role_of
from monitor.contracts.sli_buckets import SliBatch
from monitor.errors import WireError
from monitor.notify.clock import FlushClock
from monitor.notify.delivery import deliver
from monitor.notify.pipeline import Pipeline
from monitor.notify.sinks.jsonl import JsonlSink
from monitor.notify.sinks.registry import build_sinks
from monitor.notify.store import SqliteStore
from monitor.runtime.stall import StallWatch
from monitor.settings import Settings
from monitor.spec.rules import Rules
from monitor.telemetry.export import count_alerts, export_alert_state
from monitor.telemetry.metrics import Metrics
from streams.http import Health, serve
from streams.topics import SpanReader, Topics, check_alerter_partitions

log = logging.getLogger("advmon.alerter")
APP_ID = "advmon-alerter"
DELIVERED_RETENTION_S = 8 * 24 * 3600.0
TAIL_QUIET_S = 10.0  # the deliver agent has had no event for this long: the tail of alerts is checked
FLUSH_MARKER = "flushed"  # a key of the state changelog that only marks a flush (AlerterState ignores it)


def _read_committed(create):
    """faust reads with ``read_committed`` only in exactly-once mode; ingest writes in transactions, so
    the alerter must not see aborted batches even though it runs at-least-once itself."""

    def create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"
        return consumer

    return create_worker_consumer


setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer",  # noqa: B010 (a patch of faust's class)
        _read_committed(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer))
# One sli-buckets message writes a handful of table entries, but a sweep of expired entries (and the
# first sweep of a store written by an earlier build, an entry per client) deletes thousands at once;
# faust's default of 100 buffered records only produces warnings at that size.
ProducerBuffer.max_messages = 20_000


class _RebalanceSensor(faust.Sensor):
    """Times faust's rebalances (from the revocation to the end of table recovery) on a :class:`StallWatch`."""

    def __init__(self, watch: StallWatch) -> None:
        super().__init__()
        self.watch = watch

    def on_rebalance_start(self, app: Any) -> dict:
        self.watch.start(time.monotonic())
        return {}

    def on_rebalance_end(self, app: Any, state: dict) -> None:
        self.watch.end()


class AlerterService:
    """The faust app and the domain objects its agents drive."""

    def __init__(self, settings: Settings, rules: Rules, metrics: Metrics, health: Health,
                 alerts_out: str | None = None, baselines: dict[str, dict[str, float]] | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.health = health
        # a rebalance (recovery included) that lasts: a log line with where the agents wait, and a gauge that the
        # metrics thread reads even while the event loop is stuck (AdvmonAlerterRebalanceStuck)
        self.rebalance = StallWatch(report_after_s=max(120.0, 6 * settings.alerter_session_timeout_seconds),
                                    every_s=120.0)
        metrics.rebalance_seconds.set_function(lambda: self.rebalance.seconds(time.monotonic()))
        self.topics = Topics.from_settings(settings)
        sinks, self.dispatcher = build_sinks(
            rules, metrics, SqliteStore(settings.outbox_path)
        )  # ConfigError: a secret is unset
        self.sinks = {s.name: s for s in sinks}
        self.alerts_file = JsonlSink(alerts_out, append=True) if alerts_out else None
        self.pipeline = self._new_pipeline()
        self.partitions = settings.alerter_partitions
        self.durables: dict[int, DurableAlerter] = {}  # per owned partition of sli-buckets and scores
        self.spans = SpanReader(settings.kafka_bootstrap)  # what faust did not hand over, read beside it
        self._delivery = asyncio.Lock()  # the deliver agent and the tail check take transitions in one at a time
        self._last_delivery = time.monotonic()  # when the deliver agent last had an event
        self._taken: dict[TP, int] = {}  # per input partition, the last offset taken in durably (what is committed)
        self._delivering = False  # the deliver agent has run: its tables are recovered
        self.baselines = baselines  # the profile's measured benign rates: objectives may be relative to them
        self._remembered = False
        self.clock = FlushClock()  # event time for group waits, also once traffic has stopped
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            f"{s.topic_prefix}{APP_ID}", broker=f"kafka://{s.kafka_bootstrap}", store="memory://",
            datadir=s.alerter_data_dir, autodiscover=False, web_enabled=False, topic_partitions=self.partitions,
            topic_replication_factor=1,
            processing_guarantee="at_least_once", consumer_auto_offset_reset="earliest",
            # Commits now advance (see _commit_point), and each waits for the producer's flush: every 2 s, never
            # inline in the reader every 100 messages, which stalled it under load (commit timer runs of 7-9 s).
            broker_commit_every=1_000_000, broker_commit_interval=2.0,
            table_standby_replicas=1 if self.partitions > 1 else 0,  # another alerter keeps each partition warm
            broker_session_timeout=s.alerter_session_timeout_seconds,
            broker_request_timeout=max(90.0, s.alerter_session_timeout_seconds + 30.0),
            producer_acks=-1, producer_max_request_size=8 << 20,
            # Static membership: a restarted alerter takes its partitions back at once instead of
            # waiting for the dead member's session to time out.
            consumer_group_instance_id=f"{s.topic_prefix}{APP_ID}-{s.instance_id}",
        )
        sli_topic = app.topic(self.topics.sli_buckets, key_type=bytes, value_type=bytes, value_serializer="raw",
                              key_serializer="raw")
        scores_topic = app.topic(self.topics.scores, key_type=bytes, value_type=bytes, value_serializer="raw",
                                 key_serializer="raw")
        self.alerts_topic = app.topic(self.topics.alerts, key_type=bytes, value_type=bytes, value_serializer="raw",
                                      key_serializer="raw", partitions=1)  # as the delivery tables
        json_schema: faust.Schema = faust.Schema(key_serializer="json", value_serializer="json")
        self.state = app.Table("state", partitions=self.partitions, schema=json_schema)
        # The delivery tables are also written outside any stream event (the flush timer removes what it sent, the
        # tail check takes in transitions faust did not hand over), so they pick their changelog partition with the
        # partitioner instead of from the current event.
        self.delivered = app.Table("delivered", partitions=1, schema=json_schema, use_partitioner=True)
        self.open_alerts = app.Table("open-alerts", partitions=1, schema=json_schema, use_partitioner=True)
        self.handled = app.Table("handled", partitions=1, schema=json_schema,  # the last alerts offset taken in
                                 use_partitioner=True)
        # Transitions routed into a group that still waits (group_wait / group_interval): sent by a later flush.
        self.pending = app.Table("pending-notifications", partitions=1, schema=json_schema, use_partitioner=True)
        app.agent(sli_topic, name="evaluate", concurrency=1)(self._evaluate)
        app.agent(scores_topic, name="evaluate-scores", concurrency=1)(self._evaluate)
        app.agent(self.alerts_topic, name="deliver", concurrency=1)(self._deliver)
        app.timer(interval=5.0, on_leader=False)(self._heartbeat)  # liveness without traffic
        app.timer(interval=5.0, on_leader=False)(self._flush)
        app.timer(interval=5.0, on_leader=False)(self._deliver_tail)
        app.sensors.add(_RebalanceSensor(self.rebalance))
        app.on_partitions_assigned.connect(self._assigned)  # type: ignore[arg-type]  # (faust's stubs: a function)
        return app

    async def _assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A rebalance's assignment (``args[0]``): the alerters of partitions that went elsewhere go (one that comes
        back later is rebuilt from the table, as is one whose state another alerter advanced meanwhile), and the
        notification pipeline starts again from its tables where the alerts partition went and came back."""
        kept = {tp.partition for tp in args[0] if tp.topic in (self.topics.sli_buckets, self.topics.scores)}
        consumer: Any = self.app.consumer  # faust's own class: its private commit bookkeeping
        consumer._new_offset = self._commit_point  # what is committed (see _commit_point)
        self._taken = {tp: offset for tp, offset in self._taken.items() if tp in args[0]}
        for partition in [p for p in self.durables if p not in kept]:
            del self.durables[partition]
            log.info("alerter hands over partition %d", partition)
        if not any(tp.topic == self.topics.alerts for tp in args[0]):
            self.pipeline = self._new_pipeline()
            self._remembered = self._delivering = False

    def _new_pipeline(self) -> Pipeline:
        return Pipeline(self.rules.routes, (*self.rules.silences, *self.rules.maintenance))

    def _owns_alerts(self) -> bool:
        """Whether this alerter delivers (it holds the alerts partition) and its tables are recovered."""
        return not self.app.in_recovery and any(tp.topic == self.topics.alerts
                                                for tp in self.app.assignor.assigned_actives())

    async def _heartbeat(self) -> None:
        self.health.beat()
        now = time.monotonic()
        if self.rebalance.due(now):
            log.warning("alerter: a consumer-group rebalance has lasted %.0f s (table recovery: %s); where the agents "
                        "wait:\n%s", self.rebalance.seconds(now), self.app.in_recovery,
                        self.app.agents.human_tracebacks())

    def _remember_once(self) -> None:
        """After a (re)start: transitions that were waiting in a group wait again (they were never sent);
        the other open alerts count as announced, so repeats count from when they were, not from now."""
        if not self._remembered:
            waiting = [(Alert.model_validate(p["alert"]), p["at"]) for p in self.pending.values()]
            for alert, at in sorted(waiting, key=lambda item: item[1]):
                self.pipeline.accept([alert], now=at)
            if waiting:  # their wait ends in time also where no traffic comes (a restart in a quiet hour)
                self.clock.now(max(at for _, at in waiting), time.time())
            waiting_keys = {a.dedup_key for a, _ in waiting}
            self.pipeline.remember([a for a in self._open() if a.dedup_key not in waiting_keys])
            self._remembered = True

    def _open(self) -> list[Alert]:
        return [Alert.model_validate(a) for a in self.open_alerts.values()]

    async def _flush(self) -> None:
        """Groups whose wait is over, and reminders of what still fires (``repeat_interval``), in event time."""
        if not (self._delivering or self._owns_alerts()):
            return  # another alerter delivers, or the tables are not recovered yet
        self._remember_once()
        wall = time.time()
        now = self.clock.now(max([d.watermark(wall) for d in list(self.durables.values())], default=-math.inf), wall)
        if now is not None:
            await self._send(self.pipeline.flush(now))

    async def _send(self, notifications: list) -> None:
        loop = asyncio.get_running_loop()
        for notification in notifications:
            await loop.run_in_executor(None, deliver, self.sinks, self.metrics, notification)
            for alert in notification.alerts:
                self.pending.pop(alert.alert_id, None)
        still = {a.alert_id for a in self.pipeline.pending()}
        for alert_id in [k for k in self.pending if k not in still]:  # sent, or counted as truncated
            del self.pending[alert_id]
        if notifications:
            await self._make_durable()

    async def _evaluate(self, stream) -> None:
        self.health.ready = True
        async for event in stream.events():
            self.health.beat()
            offset, topic, partition = event.message.offset, event.message.topic, event.message.partition
            name = topic.removeprefix(self.settings.topic_prefix)  # as the state's progress names it
            durable = self.durables.get(partition)
            if durable is None:
                durable = self.durables[partition] = self._durable(partition)
                await self._publish(durable.unconfirmed)  # a crash may have stored them, not sent them
                log.info("alerter resumes %s partition %d (%s) at offset %d; its state applied offsets %s", topic,
                         partition, durable.role, offset, durable.progress.offsets)
            async for missed, value in self._missed(topic, partition, offset, durable.progress.offsets.get(name, -1)):
                await self._apply(durable, topic, name, missed, value)
            await self._apply(durable, topic, name, offset, event.value)
            self._took(event.message.tp, offset)

    async def _apply(self, durable: DurableAlerter, topic: str, name: str, offset: int, value: bytes) -> None:
        """One message of ``sli-buckets`` or ``scores`` (``name``: the topic without its prefix) into its partition's
        state; the transitions to ``alerts``."""
        try:
            batch = SliBatch.decode(value)
        except WireError as exc:  # a foreign or corrupt message: skip it loudly, never crash-loop on it
            log.error("%s offset %d skipped: %s", topic, offset, exc)
            self.metrics.dead_letters.labels(reason="other").inc()
            return
        alerts = durable.apply(offset, batch, now=time.time(), topic=name)
        self.metrics.late_events.inc(batch.late)
        await self._publish(alerts)
        count_alerts(self.metrics, alerts)
        export_alert_state(self.metrics, durable.alerter, [a for d in self.durables.values() for a in d.firing])
        wall = time.time()
        watermark = durable.watermark(wall)
        self.clock.now(watermark, wall)  # the flush timer goes on from here once traffic stops
        if watermark > float("-inf"):
            self.metrics.watermark.set(watermark)

    async def _missed(self, topic: str, partition: int, offset: int, applied: int, dense: bool = False
                      ) -> AsyncIterator[tuple[int, bytes]]:
        """The committed messages between what the state took in last (``applied``) and this event, read from the
        broker beside faust's consumer, which goes on from this event. A partition resumes where its state's
        progress says, not where faust hands it over: faust can resume a partition past what its state applied (seen
        with two alerters: a killed one's partitions resumed 160 messages ahead) and drop messages it reads again
        below its read offset after a rebalance (seen: one transition of ``alerts`` never reached the deliver
        agent), so every event is compared with the progress. ``dense``: every offset is a message (``alerts``);
        otherwise a transaction's commit marker follows each message, so a gap of two is the next message and a
        larger one is read (markers and aborted messages only, mostly). ``applied`` -1: no stored progress (a
        store written before this check), so the group's offset stands."""
        start = applied + 1
        if applied < 0 or offset - applied <= (1 if dense else 2):
            return
        while start < offset:
            found, start = await asyncio.to_thread(self.spans.read, topic, partition, start, offset)
            if found:
                log.warning("%s partition %d: faust handed over offset %d, past what its state applied (%d): offsets "
                            "%d-%d read from the broker first", topic, partition, offset, applied, found[0][0],
                            found[-1][0])
                self.metrics.caught_up.labels(topic=topic.removeprefix(self.settings.topic_prefix)).inc(len(found))
            for message in found:
                yield message

    def _durable(self, partition: int) -> DurableAlerter:
        s = self.settings
        return DurableAlerter(self.rules, PartitionStore(self.state, partition), s.bucket_seconds, s.grace_seconds,
                              s.idle_source_seconds, baselines=self.baselines, role=role_of(partition, self.partitions))

    async def _publish(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            await self.alerts_topic.send(key=alert.dedup_key.encode(), value=alert.to_json())
        await self._make_durable()

    async def _deliver(self, stream) -> None:
        async for event in stream.events():
            self.health.beat()
            self._delivering = True
            self._remember_once()
            self._last_delivery = time.monotonic()
            offset, topic, partition = event.message.offset, event.message.topic, event.message.partition
            async with self._delivery:
                async for missed, value in self._missed(topic, partition, offset, self.handled.get("alerts", -1),
                                                        dense=True):
                    await self._take(missed, value)
                await self._take(offset, event.value)
                self._took(event.message.tp, offset)

    async def _deliver_tail(self) -> None:
        """Transitions at the end of ``alerts`` that faust has not handed to the deliver agent after a quiet
        while: a message faust dropped (see ``_missed``) is otherwise found only when a later transition comes,
        which may be hours later."""
        if not (self._delivering and self._owns_alerts()) or time.monotonic() - self._last_delivery < TAIL_QUIET_S:
            return
        topic = self.alerts_topic.get_topic_name()
        try:
            end = self.app.consumer.highwater(TP(topic, 0))  # None before the first fetch
        except AssertionError:  # aiokafka's "Partition is not assigned": a rebalance came in between
            return
        if end is None:
            return
        async with self._delivery:  # _missed reads nothing where the end is the next offset (or nothing was handled)
            async for missed, value in self._missed(topic, 0, end, self.handled.get("alerts", -1), dense=True):
                await self._take(missed, value)
                self._took(TP(topic, 0), missed)

    async def _take(self, offset: int, value: bytes) -> None:
        """One transition of ``alerts`` into the notification pipeline, once (table ``delivered``)."""
        try:
            alert = Alert.model_validate_json(value)
        except ValueError as exc:
            log.error("alerts offset %d skipped: not an alert: %s", offset, exc)
            self._handled(offset)
            return
        if self.delivered.get(alert.alert_id) is not None:
            self._handled(offset)
            return  # already delivered before a restart or redelivery
        now = alert.resolved_at if alert.resolved_at is not None else alert.fired_at
        self.clock.now(now, time.time())  # event time for group waits where this alerter evaluates no partition
        firing = self._open()
        if alert.status == "firing":
            self.open_alerts[alert.dedup_key] = alert.model_dump()
        else:
            self.open_alerts.pop(alert.dedup_key, None)
        if self.alerts_file is not None:
            self.alerts_file.write([alert])
        self.pipeline.accept([alert], now=now, firing=firing)
        for waiting in self.pipeline.pending():
            if waiting.alert_id not in self.pending:
                self.pending[waiting.alert_id] = {"alert": waiting.model_dump(), "at": now}
        self.delivered[alert.alert_id] = now  # handled: sent below, or durable in pending until it is
        self._handled(offset)  # transitions up to here are delivered, or durable in pending
        await self._send(self.pipeline.flush(now))
        await self._make_durable()
        self._expire_delivered(now)

    def _took(self, tp: TP, offset: int) -> None:
        """Everything of ``tp`` up to ``offset`` is in the state (or delivered), and the broker has acknowledged it."""
        self._taken[tp] = max(offset, self._taken.get(tp, -1))

    def _commit_point(self, tp: TP) -> int | None:
        """The offset the consumer group commits for ``tp``: after the last message this alerter took in durably
        (replaces faust's ``Consumer._new_offset``). faust commits up to the first break in its list of acknowledged
        offsets, and that list breaks where it should not: the message after a gap of transaction markers was
        counted twice (its gap took it in as well), so commits crept two offsets a second behind sli-buckets (a
        soak: 30,000 records behind after an hour, all read again at a restart; robinhood/faust#625,
        faust-streaming/faust#606); and after a rebalance a kept partition's commits stopped (seen in the sharded
        e2e test). What the state took in is what may be committed; faust's list is only emptied."""
        consumer: Any = self.app.consumer
        consumer._acked[tp].clear()
        consumer._acked_index[tp].clear()
        consumer._gap[tp].clear()
        taken = self._taken.get(tp)
        return None if taken is None else taken + 1

    def _handled(self, offset: int) -> None:
        """Transitions of ``alerts`` up to ``offset`` are taken in (one read again after a rebalance moves nothing
        back)."""
        self.handled["alerts"] = max(offset, self.handled.get("alerts", -1))

    async def _make_durable(self) -> None:
        """Wait until table changes and sent alerts are acknowledged by the broker: a crash after this
        point cannot undo them, so the window for a repeat after a crash is one broker round trip.

        faust queues table changes in a buffer that one task hands to the producer in order; its
        ``flush`` gives up after 0.1 s without a send, and its offset commits do not wait for the buffer,
        so a slow moment could commit the input offset of a change not yet written (lost at a crash). A
        marker queued behind the changes is acknowledged only after all of them were handed over."""
        marker = self.state.send_changelog(0, FLUSH_MARKER, True)
        await marker
        await self.app.producer.flush()

    def _expire_delivered(self, now: float) -> None:
        if len(self.delivered) % 1000:  # a sweep every thousand deliveries keeps the table bounded
            return
        for alert_id, at in list(self.delivered.items()):
            if now - at > DELIVERED_RETENTION_S:
                del self.delivered[alert_id]


def run_alerter(settings: Settings, rules: Rules, alerts_out: str | None = None,
                baselines: dict[str, dict[str, float]] | None = None) -> int:
    check_alerter_partitions(settings)
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health, settings.http_host)
    service = AlerterService(settings, rules, metrics, health, alerts_out, baselines)
    service.dispatcher.start()  # retries of HTTP deliveries, also those left in the outbox by a crash
    # faust configures the root handler at this level; faust's, mode's and the Kafka clients' own
    # loggers stay at WARNING (set by the CLI), so INFO here means advmon's lines.
    worker = faust.Worker(service.app, loglevel="INFO", quiet=True, console_port=0)
    log.info("alerter consuming %s from %s", service.topics.sli_buckets, settings.kafka_bootstrap)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # faust's worker ends by sys.exit with its own status
        return int(exc.code or 0)
    finally:
        log.info("alerter stops; spans read beside faust's consumer: %d", service.spans.reads)
        service.spans.close()
    return 0

