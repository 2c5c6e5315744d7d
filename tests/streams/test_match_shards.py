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
    """Two ingest workers leave matching to two shards and a reduce. A shard is SIGKILLed once the reduce has
    published the Sybil attack's first cross-key matches, the reduce a little later, each restarted: each rebuilds
    from its checkpoint and its topics, and the daemons page as replay does, with every near-duplicate replay found
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
    shards = [daemons(f"shard-{s}", "matcher", "--shard", str(s), "--instance", f"s-{s}", "--http-port", "0",
                      environ=patient).start() for s in range(2)]
    reduce = daemons("reduce", "matcher", "--shard", "reduce", "--instance", "m-0", "--http-port", "0",
                     environ=patient).start()
    alerter = daemons("alerter", "alerter", "--http-port", "0", environ=patient).start()
    producer = Producer(work, workers[0].env, rate=1500)  # about 45 s: the kills land while the attack goes on
    everyone = (*workers, *shards, reduce, alerter)

    def cross_key_matches(records):
        return sum(r.key == b"matcher-m-0" and len(SliBatch.decode(r.value).edges) > 0 for r in records)

    first = read_topic(kafka.bootstrap, topics.sli_buckets, until=lambda rs: cross_key_matches(rs) >= 1, timeout_s=120)
    assert cross_key_matches(first), [d.log()[-3000:] for d in everyone]
    shards[1].kill()
    shards[1].start()
    read_topic(kafka.bootstrap, topics.sli_buckets, until=lambda rs: cross_key_matches(rs) >= 3, timeout_s=60)
    reduce.kill()
    assert producer.process.poll() is None  # mid-stream
    reduce.start()
    producer.wait(timeout=180)

    assert_like_oracle(kafka, topics.alerts, expected, lambda: [d.log()[-3000:] for d in everyone])
    for daemon in (shards[1], reduce):
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
    assert all(d.terminate() == 0 for d in everyone)
    assert "Traceback" not in "".join(d.log() for d in everyone)
