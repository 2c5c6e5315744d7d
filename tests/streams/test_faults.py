"""Faults on the real broker: the broker itself stops mid-stream and comes back."""

import os
import time

import pytest

from streams.broker import LocalBroker
from tests.streams.conftest import Daemon, alerts_on, read_topic
from tests.streams.test_kafka_e2e import Producer, committed_events, topics_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own, so stopping it does not disturb the others."""
    broker = LocalBroker(tmp_path / "kafka").start(timeout_s=120)
    yield broker
    broker.stop()


def test_broker_restart_mid_stream_loses_nothing_and_repeats_nothing(own_broker, prefix, traffic, tmp_path):
    work, expected, dead, valid = traffic
    topics = topics_for(own_broker, prefix)
    env = {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": own_broker.bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
           "ADVMON_IDLE_SOURCE_SECONDS": "3", "ADVMON_MAX_RECORD_BYTES": "65536",
           "ADVMON_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), "ADVMON_ALERTER_DATA_DIR": str(tmp_path / "alerter-data")}
    ingest = Daemon(["ingest", "--instance", "ingest-0", "--profile", str(work / "profile.npz"), "--http-port", "0"],
                    env, tmp_path / "ingest.log").start()
    alerter = Daemon(["alerter", "--http-port", "0", "--alerts-out", str(tmp_path / "delivered.jsonl")], env,
                     tmp_path / "alerter.log").start()
    try:
        producer = Producer(work, env, rate=2000)
        # the outage hits a running pipeline: the alerter has processed input and stored its progress
        read_topic(own_broker.bootstrap, f"{prefix}advmon-alerter-state-changelog", timeout_s=90,
                   until=lambda rs: any(r.key == b'"progress"' for r in rs))
        assert producer.process.poll() is None, "the stream should still be flowing when the broker stops"
        stopped = time.monotonic()
        own_broker.stop()
        time.sleep(5)
        own_broker.start(timeout_s=120)
        producer.wait(timeout=180)  # the producer rides the outage out with its retries
        assert ingest.alive() and alerter.alive(), (ingest.log(), alerter.log())

        assert committed_events(own_broker, topics.sli_buckets, valid) == valid  # nothing lost, nothing twice
        letters = read_topic(own_broker.bootstrap, topics.dead_letters, until=lambda rs: len(rs) >= dead, timeout_s=60)
        assert len(letters) == dead
        alerts = read_topic(own_broker.bootstrap, topics.alerts, timeout_s=180,
                            until=lambda rs: set(expected) <= {a["alert_id"] for a in alerts_on(rs)})
        assert set(expected) <= {a["alert_id"] for a in alerts_on(alerts)}, alerter.log()
        recovered_s = time.monotonic() - stopped

        path = tmp_path / "delivered.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(path.read_bytes().splitlines() if path.exists() else []) < len(expected):
            time.sleep(1)
        delivered = [line for line in path.read_bytes().splitlines()]
        assert len(delivered) == len(set(delivered)) and len(delivered) >= len(expected)
        print(f"broker outage of 5 s: every alert out {recovered_s:.0f} s after the broker stopped")
    finally:
        for daemon in (ingest, alerter):
            if daemon.alive():
                daemon.kill()
