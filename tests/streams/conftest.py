"""A real single-node Kafka broker on 127.0.0.1 for the stream tests (resolved from Maven Central)."""

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from monitor.contracts.alerts import Alert
from streams.broker import LocalBroker

#: One row per fault test: printed as a table at the end of the run, and written as Markdown to
#: $FAULTS_REPORT when set (the table in BENCHMARKS.md comes from there).
FAULT_RESULTS: list[dict] = []


@pytest.fixture
def fault_report():
    def record(fault, lost, duplicated, recovery, note=""):
        FAULT_RESULTS.append({"fault": fault, "lost": lost, "duplicated": duplicated, "recovery": recovery,
                              "note": note})
    return record


def fault_table() -> str:
    lines = ["| fault | lost | duplicated | recovery | note |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['fault']} | {r['lost']} | {r['duplicated']} | {r['recovery']} | {r['note']} |" for r in FAULT_RESULTS
    ]
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter):
    if not FAULT_RESULTS:
        return
    terminalreporter.write_sep("-", "fault tests")
    terminalreporter.write(fault_table())
    if os.environ.get("FAULTS_REPORT"):
        with open(os.environ["FAULTS_REPORT"], "w") as out:
            out.write(fault_table())


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
    env = {
        **os.environ,
        "ADVMON_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "ADVMON_ALERTER_DATA_DIR": str(tmp_path / "alerter-data"),
        "ADVMON_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "ADVMON_TOPIC_PREFIX": prefix,
        "ADVMON_IDLE_SOURCE_SECONDS": "3",
        "ADVMON_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
        "ADVMON_FINGERPRINT_SECRET": "advmon-development-secret-change-me",
    }
    started = []

    def make(name, *args, environ=None):
        daemon = Daemon(args, {**env, **(environ or {})}, tmp_path / f"{name}.log")
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


GRACE_S, BUCKET_S = 60.0, 60


MAX_RECORD_BYTES = 65536  # below Kafka's 1 MB message limit, so an oversized record can travel to ingest


def advmon(*args, cwd):
    env = {**os.environ, "ADVMON_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES)}
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def _ts(line):
    try:
        ts = orjson.loads(line).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return 0.0
    return ts if isinstance(ts, (int, float)) else 0.0



@pytest.fixture(scope="session")
def traffic(tmp_path_factory):
    """One hour of the demo's traffic, poison records, a closing record; and the replay oracle."""
    return demo_traffic(tmp_path_factory.mktemp("traffic"), "1h")


@pytest.fixture(scope="session")
def sybil_traffic(tmp_path_factory):
    """Two hours of the demo's traffic, the shortest in which replay pages on its Sybil attack (100 keys)."""
    return demo_traffic(tmp_path_factory.mktemp("sybil-traffic"), "2h")


@pytest.fixture(scope="session")
def realistic_traffic(tmp_path_factory):
    """The digits-window-ref scenario family's day in three hours, which the demo did not generate (clients with
    natural repetition and noise, a population-wide change; PGD, FGSM and SimBA from one key each, HopSkipJump and
    Square spread over 30 and 25 keys), its profile fitted on the first 22 minutes of that traffic, a closing
    record, and the replay oracle."""
    from monitor.sim.evaluation import reference_profile
    from monitor.sim.families import FAMILIES, generate

    work = tmp_path_factory.mktemp("realistic-traffic")
    day = generate(FAMILIES["digits-window-ref"].compressed(3.0))
    reference_profile(day).save(str(work / "profile.npz"))
    return with_oracle(work, day.records, poison=[])


def demo_traffic(work, duration):
    """The demo's traffic with poison records and a closing record, and the replay oracle: the transitions the
    daemons' watermark will certainly pass, the dead letters, the valid events."""
    made = advmon("demo", "--duration", duration, "--metrics-port", "0", "--no-progress", "--events-out",
                  "events.jsonl", "--profile-out", "profile.npz", cwd=work)
    assert made.returncode == 0, made.stderr
    poison = [b"\xff\xfe not even utf-8", b'{"event_id": "huge", "pad": "' + b"x" * (2 * MAX_RECORD_BYTES) + b'"}',
              b'{"event_id": "nan", "ts": 1, "client_id": "c", "prediction": {"label": "1", "confidence": NaN}}']
    return with_oracle(work, (work / "events.jsonl").read_bytes().splitlines(), poison)


def with_oracle(work, lines, poison):
    """``lines`` with ``poison`` after the first hundred and a closing record 10 minutes after the last event, as
    ``work/events.jsonl`` (the profile is ``work/profile.npz``); and the replay oracle: the transitions the
    daemons' watermark will certainly pass, the dead letters, the valid events."""
    last_ts = max(_ts(line) for line in lines)
    closing = orjson.dumps({"event_id": "closing", "ts": last_ts + 600, "client_id": "closer", "model": "digits-mlp",
                            "prediction": {"label": "1", "confidence": 0.9}})
    (work / "events.jsonl").write_bytes(b"\n".join(lines[:100] + poison + lines[100:] + [closing]) + b"\n")
    oracle = advmon("replay", "events.jsonl", "--profile", "profile.npz", "--alerts-out", "oracle.jsonl",
                    "--dlq-out", "oracle-dlq.jsonl", "--suspicious-out", "suspicious.jsonl", cwd=work)
    assert oracle.returncode == 0, oracle.stderr
    settle = last_ts + 600 - GRACE_S - BUCKET_S  # transitions the daemons' watermark has certainly passed
    expected = [Alert.model_validate_json(line) for line in (work / "oracle.jsonl").read_bytes().splitlines()]
    expected = {a.alert_id: a for a in expected if (a.resolved_at or a.fired_at) < settle}
    letters = work / "oracle-dlq.jsonl"  # written once there is a dead letter
    dead = len(letters.read_bytes().splitlines()) if letters.exists() else 0
    valid = sum(1 for line in (work / "events.jsonl").read_bytes().splitlines()) - dead
    assert len(expected) >= 4 and dead >= len(poison)
    return work, expected, dead, valid


