"""A real single-node Kafka broker on 127.0.0.1 for the stream tests (resolved from Maven Central)."""

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from streams.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture
def prefix():
    """Topics, consumer groups and the faust app id of one test, apart from every other test's."""
    return f"t{uuid.uuid4().hex[:8]}."


class Daemon:
    """``advmon ingest|alerter`` as a child process with the test's broker and topic prefix."""

    def __init__(self, args, env, log_path):
        self.args, self.env, self.log_path = args, env, log_path
        self.process = None

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "monitor", *self.args], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        return self

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout=60):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def daemons(kafka, prefix, tmp_path):
    env = {**os.environ, "ADVMON_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), "ADVMON_KAFKA_BOOTSTRAP": kafka.bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
           "ADVMON_IDLE_SOURCE_SECONDS": "3", "ADVMON_MAX_RECORD_BYTES": "65536", "ADVMON_FINGERPRINT_SECRET": "advmon-development-secret-change-me"}
    started = []

    def make(name, *args):
        daemon = Daemon(args, env, tmp_path / f"{name}.log")
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.alive():
            daemon.kill()


def read_topic(bootstrap, topic, until=lambda records: False, timeout_s=5.0):
    """Every committed record of a topic, polling until ``until(records)`` holds or the time is up."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, isolation_level="read_committed", group_id=None)
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
            if until(records):
                break
    finally:
        consumer.close()
    return records


def alerts_on(records):
    return [orjson.loads(r.value) for r in records]
