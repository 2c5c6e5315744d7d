"""A window of event time read from a Kafka topic, for ``advmon profile fit --topic``.

Each partition is read from the first offset whose record timestamp is at or after ``since`` less ten
minutes (Kafka's own timestamps: the producer's send time, never much earlier than the event time) to
its end as of the start of the read; the caller keeps the events whose own ``ts`` lies in the window.
Kafka timestamps do not end the read: events backfilled or replayed into the topic carry send times
far after their event times.
"""

from __future__ import annotations

from collections.abc import Iterator

from monitor.errors import ServiceUnavailable

SLACK_MS = 600_000  # start ten minutes early: producer timestamps may lag event time


def read_window(bootstrap: str, topic: str, since: float, batch: int = 4096) -> Iterator[list[bytes]]:
    """Batches of raw records from every partition of ``topic``, from about ``since`` (epoch seconds) on."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000,
                                 isolation_level="read_committed")
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ServiceUnavailable(f"topic {topic} has no partitions on {bootstrap}")
        consumer.assign(partitions)
        starts = consumer.offsets_for_times({tp: max(0, int(since * 1000) - SLACK_MS) for tp in partitions})
        ends = consumer.end_offsets(partitions)
        live = set()
        for tp in partitions:
            found = starts.get(tp)
            if found is not None and found.offset < ends[tp]:
                consumer.seek(tp, found.offset)
                live.add(tp)
        while live:
            polled = consumer.poll(timeout_ms=1000, max_records=batch)
            if not polled:
                live = {tp for tp in live if consumer.position(tp) < ends[tp]}
                continue
            records = []
            for tp, messages in polled.items():
                for message in messages:
                    if message.offset + 1 >= ends[tp]:
                        live.discard(tp)
                    if message.offset < ends[tp] and message.value is not None:
                        records.append(message.value)
                if tp not in live:
                    consumer.pause(tp)
            if records:
                yield records
    finally:
        consumer.close()
