"""Topic helpers on the real broker: the committed messages of a span, past transaction markers and aborts."""

import asyncio

from aiokafka import AIOKafkaProducer

from streams.topics import SpanReader, TopicSpec, create_topics


async def _write(bootstrap, topic):
    """Three transactions on one partition: two messages committed, one aborted, one more committed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-writer")
    await producer.start()
    try:
        for values, commit in (([b"a", b"b"], True), ([b"x"], False), ([b"c"], True)):
            await producer.begin_transaction()
            for value in values:
                await producer.send_and_wait(topic, value, partition=0)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


def test_the_committed_messages_of_a_span_come_in_pages_without_aborted_ones_or_markers(kafka, prefix):
    topic = f"{prefix}span"
    create_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
    asyncio.run(_write(kafka.bootstrap, topic))
    # offsets: a 0, b 1, marker 2, x 3 (aborted), marker 4, c 5, marker 6
    reader, pages = SpanReader(kafka.bootstrap), SpanReader(kafka.bootstrap, limit=2)
    try:
        assert reader.read(topic, 0, 0, 7) == ([(0, b"a"), (1, b"b"), (5, b"c")], 7)
        page, next_start = pages.read(topic, 0, 0, 7)
        assert page == [(0, b"a"), (1, b"b")] and 2 <= next_start <= 5
        assert pages.read(topic, 0, next_start, 7) == ([(5, b"c")], 7)
        assert reader.read(topic, 0, 2, 5) == ([], 5)  # markers and an abort only
        assert reader.read(topic, 0, 1, 5)[0] == [(1, b"b")]  # the span's end is not read
        assert reader.reads == 3
    finally:
        reader.close()
        pages.close()


def test_the_sharded_matchers_topics_take_a_round_of_pairs_past_the_brokers_1_mb_default(kafka, prefix):
    """A shard's round 1 of a seal of 4,096 near-identical attack queries was 7.5-8 MB (each pairs with up to 64
    earlier ones); the topics allow 64 MB, and the matcher's consumers and rebuilds read a 12 MB message."""
    from monitor.settings import Settings
    from streams.match_shards import MAX_MESSAGE_BYTES
    from streams.matcher import read_log
    from streams.topics import Topics

    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(kafka.bootstrap, [s for s in topics.specs(1) if s.name == topics.match_pairs])
    big = bytes(range(256)) * (12 << 12)  # 12 MB

    async def round_trip():
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=MAX_MESSAGE_BYTES)
        await producer.start()
        try:
            await producer.send_and_wait(topics.match_pairs, big, partition=0)
        finally:
            await producer.stop()
        from aiokafka import TopicPartition

        return await read_log(kafka.bootstrap, TopicPartition(topics.match_pairs, 0), 0, 1, lambda b: b)

    [(offset, value, _)] = asyncio.run(round_trip())
    assert offset == 0 and value == big
