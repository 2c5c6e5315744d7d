"""``advmon matcher`` sharded by hash on a real broker: two shards and the reduce give what replay gives, through a
SIGKILL of a shard and of the reduce; and the role options are checked together."""

import re

import orjson
import pytest

from monitor.errors import ConfigError
from monitor.settings import Settings
from streams.match_shards import matcher_role


@pytest.mark.parametrize("shards, shard, role", [(1, None, "one"), (3, "2", "shard"), (3, "reduce", "reduce")])
def test_the_role_comes_from_the_shard_count_and_the_shard(shards, shard, role):
    assert matcher_role(Settings(matcher_shards=shards, matcher_shard=shard)) == role


@pytest.mark.parametrize("shards, shard, reason", [
    (1, "reduce", "needs --shards"), (3, None, "name this process's role"), (3, "3", "not one of 0..2")])
def test_a_role_that_does_not_fit_the_shard_count_is_refused(shards, shard, reason):
    with pytest.raises(ConfigError, match=reason):
        matcher_role(Settings(matcher_shards=shards, matcher_shard=shard))


@pytest.mark.integration
def test_two_shards_and_the_reduce_alert_like_replay_through_kills(kafka, prefix, daemons, sybil_traffic):
    """Two ingest workers leave matching to two shards and a reduce; shard 1 runs twice, one process standing by.
    Once the reduce has published the Sybil attack's first cross-key matches, the working shard 1 is SIGKILLed for
    good (the one standing by takes its partitions over), then the reduce, restarted at once: each rebuilds from
    the checkpoint and the topics, and the daemons page as replay does, with every near-duplicate replay found
    reported once."""
    from monitor.contracts.match_shards import ShardPairs, decode_reply
    from monitor.contracts.sli_buckets import SliBatch
    from tests.streams.conftest import read_topic
    from tests.streams.test_kafka_e2e import (
        Producer,
        assert_committed_past_what_it_read,
        assert_like_oracle,
        committed_events,
        near_duplicates,
        topics_for,
    )

    work, expected, dead, valid = sybil_traffic
    topics = topics_for(kafka, prefix)
    profile = str(work / "profile.npz")
    patient = {"ADVMON_IDLE_SOURCE_SECONDS": "15", "ADVMON_MATCHER_SHARDS": "2"}
    workers = [daemons(f"ingest-{i}", "ingest", "--instance", f"ingest-{i}", "--remote-matching", "--profile", profile,
                       "--http-port", "0", environ=patient).start() for i in range(2)]
    shards = [daemons(f"shard-{name}", "matcher", "--shard", name[0], "--instance", f"s-{name}", "--http-port", "0",
                      environ=patient).start() for name in ("0", "1a", "1b")]
    reduce = daemons("reduce", "matcher", "--shard", "reduce", "--instance", "m-0", "--http-port", "0",
                     environ=patient).start()
    alerter = daemons("alerter", "alerter", "--http-port", "0", environ=patient).start()
    producer = Producer(work, workers[0].env, rate=1500)  # about 45 s: the kills land while the attack goes on
    everyone = (*workers, *shards, reduce, alerter)

    def cross_key_matches(records):
        return sum(r.key == b"matcher-m-0" and len(SliBatch.decode(r.value).edges) > 0 for r in records)

    first = read_topic(kafka.bootstrap, topics.sli_buckets, until=lambda rs: cross_key_matches(rs) >= 1, timeout_s=120)
    assert cross_key_matches(first), [d.log()[-3000:] for d in everyone]

    def working(daemon):
        assignments = re.findall(r"partitions assigned: (\S+)", daemon.log_path.read_text())
        return bool(assignments) and assignments[-1] != "none"

    [active] = [d for d in shards[1:] if working(d)]
    [standby] = [d for d in shards[1:] if d is not active]
    active.kill()  # the reduce's seals wait for shard 1 until the standby has rebuilt (after the session timeout)
    reduce.kill()
    assert producer.process.poll() is None  # mid-stream
    reduce.start()
    producer.wait(timeout=180)

    assert_like_oracle(kafka, topics.alerts, expected, lambda: [d.log()[-3000:] for d in everyone])
    for daemon in (standby, reduce):
        rebuilt = re.findall(r"rebuilt up to \S+ \S+ in [0-9.]+ s", daemon.log_path.read_text())
        assert len(rebuilt) == 1, daemon.log()[-3000:]
    replay_near = sorted(d["event_id"] for d in map(orjson.loads, (work / "suspicious.jsonl").read_bytes().splitlines())
                         if d["reason"] == "near-duplicate")
    near = read_topic(kafka.bootstrap, topics.suspicious_inputs, timeout_s=60,
                      until=lambda rs: len(near_duplicates(rs)) >= len(replay_near))
    assert len(replay_near) > 100 and sorted(near_duplicates(near)) == replay_near  # none lost, none twice
    replies = [decode_reply(r.value) for r in read_topic(kafka.bootstrap, topics.match_pairs, timeout_s=10)]
    assert {r.shard for r in replies if isinstance(r, ShardPairs)} == {0, 1}  # both shards took part
    assert committed_events(kafka, topics.sli_buckets, valid) == valid
    assert_committed_past_what_it_read(kafka, f"{prefix}advmon-alerter", topics.sli_buckets, 1)
    assert all(d.terminate() == 0 for d in everyone if d is not active)
    assert "Traceback" not in "".join(d.log() for d in everyone)


def matched_backlog(kafka, daemons, requests, shards, name):
    """What the matcher, or ``shards`` shards and the reduce, publish on sli-buckets for a backlog of requests
    written before they start (topics of their own): the counter sums per column, the match edges, and the
    near-duplicates' event ids, once a last request has closed every minute; and how many messages were the first
    parts of a result cut in parts."""
    import uuid

    from monitor.contracts.match_requests import MatchRequestBatch
    from monitor.contracts.sli import VALUE_COLUMNS
    from monitor.contracts.sli_buckets import SliBatch
    from streams.produce import produce
    from streams.topics import Topics, create_topics
    from tests.streams.conftest import read_topic

    prefix = f"{name}{uuid.uuid4().hex[:6]}."
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(kafka.bootstrap, topics.specs(1))
    closing = MatchRequestBatch("ingest-0", 4e9, [])
    produce(kafka.bootstrap, topics.match_requests, [c.encode() for r in [*requests, closing] for c in r.chunks()])
    env = {"ADVMON_TOPIC_PREFIX": prefix, "ADVMON_MATCHER_SHARDS": str(shards)}
    roles = [["--shard", "reduce"], *(["--shard", str(s)] for s in range(shards))] if shards > 1 else [[]]
    started = [daemons(f"{name}-{i}", "matcher", *args, "--instance", f"{name}-{i}", "--http-port", "0",
                       environ=env).start() for i, args in enumerate(roles)]

    def messages(records):
        return [m for m in (SliBatch.decode(r.value) for r in records) if m.role == "matcher"]

    records = read_topic(kafka.bootstrap, topics.sli_buckets, timeout_s=240,
                         until=lambda rs: any(m.watermark > 3e9 for m in messages(rs)))
    assert any(m.watermark > 3e9 for m in messages(records)), [d.log()[-3000:] for d in started]
    assert all(d.terminate() == 0 for d in started)
    assert "Traceback" not in "".join(d.log() for d in started)
    batches = messages(records)
    sums = {c: round(float(sum(m.rows.values[:, i].sum() for m in batches)), 6) for i, c in enumerate(VALUE_COLUMNS)}
    edges: dict[tuple, float] = {}  # summed over the messages: a minute's edges may come in several
    for e in (e for m in batches for e in m.edges.records()):
        key = (e["bucket"], e["model"], e["client"], e["other"])
        edges[key] = edges.get(key, 0.0) + e["count"]
    near = sorted(e for m in batches for e in m.flagged.event_id.tolist())
    parts = sum(1 for m in batches if m.watermark == float("-inf") and len(m.rows))  # all but a message's last
    return sums, edges, near, parts


@pytest.mark.integration
def test_a_backlog_matched_by_two_shards_and_the_reduce_is_what_one_matcher_publishes(kafka, daemons,
                                                                                       sybil_traffic):
    """The two-hour demo stream's queries (its Sybil attack: 100 keys), written to match-requests before any matcher
    starts: one ``advmon matcher`` reads the backlog in batches of requests and publishes its result in parts under
    the broker's message limit; two shards and the reduce publish the same counter changes, match edges and
    near-duplicates."""
    from monitor.contracts.match_requests import MatchRequestBatch
    from monitor.detect.engine import Engine
    from monitor.detect.parsing import parse_batch

    work, _, _, _ = sybil_traffic
    lines = (work / "events.jsonl").read_bytes().splitlines()
    engine = Engine(Settings(remote_matching=True).engine_settings())
    requests = []
    for start in range(0, len(lines), 4096):
        result = engine.process(parse_batch(lines[start:start + 4096]).batch)
        requests.append(MatchRequestBatch("ingest-0", result.watermark, result.match_groups))
    one = matched_backlog(kafka, daemons, requests, 1, "one")
    sharded = matched_backlog(kafka, daemons, requests, 2, "two")
    assert one[0]["cross_near_dup"] > 1000 and len(one[2]) > 100
    assert one[:3] == sharded[:3]
    assert one[3] > 0  # a batch's result came in parts
