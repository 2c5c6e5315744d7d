"""The faust alerter's sustainable rate on a real broker: ``advmon alerter`` (every shipped rule, its state table
with a changelog, exactly as deployed) reads a backlog of sli-buckets messages as fast as it can; the rows a
second it applies, and how many times real time that is for the active clients a minute the backlog holds.

    python3 bench/alerter.py [--clients 100000] [--minutes 6] [--rows-per-message 2000] [--sharded 3 2]

The backlog is ``--minutes`` of benign traffic from ``--clients`` clients, one row per client a minute (the
synthetic rows of ``bench/alerter_state.py``), cut into messages of ``--rows-per-message`` rows as ingest batches
of 4,096 events over about 2,000 clients are. The clock starts when the alerter has applied its first message
(faust's start-up and table recovery are not counted) and stops when its watermark gauge reaches the backlog's
last; the alerter's first minute (every client new to every evaluator) is included. Stops by itself after
``--timeout`` seconds and says how far it got. With ``BENCH_PROFILE=FILE`` the alerter runs under cProfile.

``--sharded P A`` then runs the same backlog through ``A`` alerters sharing ``P`` partitions (each message split
as ingest splits it, on a fresh broker): the clock starts at the first message applied and stops when the
group's committed offsets reach the end of every partition.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerter_state import minute_batch  # noqa: E402
from soak import gauge, rss_mb  # noqa: E402

from monitor.contracts.shards import split  # noqa: E402
from monitor.contracts.sli_buckets import SliBatch  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from streams.broker import LocalBroker, free_port  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402


def backlog(clients: int, minutes: int, per_message: int, partitions: int = 1
            ) -> tuple[list[list[bytes]], float, int]:
    """The sli-buckets messages (encoded, a part per partition), the last one's watermark, and the rows they hold."""
    rng = np.random.default_rng(0)
    names = np.array([f"key_{i}" for i in range(clients)], dtype=object)
    messages, rows, offset, watermark = [], 0, 0, 0.0
    for minute in range(minutes):
        whole = minute_batch(minute, names, 1, rng).rows
        starts = range(0, len(whole), per_message)
        for n, start in enumerate(starts, start=1):
            part = whole.take(np.arange(start, min(start + per_message, len(whole))))
            events = int(part.column("events").sum())
            watermark = minute * 60 + 59.0 * n / len(starts)  # each message moves it: the gauge tells which is done
            batch = SliBatch("bench-0", watermark, 0, {"inference-logs/0": (offset, offset + events)}, part)
            messages.append([p.encode() for p in split(batch, partitions)])
            offset += events
            rows += len(part)
    return messages, watermark, rows


def alerter_env(broker: LocalBroker, prefix: str, work: Path, partitions: int, name: str) -> dict[str, str]:
    return {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": broker.bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
            "ADVMON_OUTBOX_PATH": str(work / f"outbox-{name}.sqlite3"),
            "ADVMON_ALERTER_DATA_DIR": str(work / f"data-{name}"), "ADVMON_IDLE_SOURCE_SECONDS": "100000",
            "ADVMON_ALERTER_PARTITIONS": str(partitions)}


def watermark_of(port: int) -> float:
    try:
        return gauge(port, "advmon_watermark_seconds")
    except (urllib.error.URLError, ConnectionError, OSError):
        return float("nan")  # not serving yet


def unsharded(args, messages, last_watermark, work) -> tuple[bool, float, float, float]:
    """One alerter on one partition: (done, seconds, RSS MB, minutes its watermark moved)."""
    from kafka import KafkaProducer

    broker = LocalBroker(work / "kafka").start()
    alerter = None
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = Topics.from_settings(Settings(topic_prefix=prefix))
        create_topics(broker.bootstrap, topics.specs(1))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=8 << 20)
        for [message] in messages:
            producer.send(topics.sli_buckets, key=b"bench-0", value=message)
        producer.flush()
        producer.close()
        port = free_port()
        profiled = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        alerter = subprocess.Popen([sys.executable, *profiled, "-m", "monitor", "alerter", "--http-port", str(port)],
                                   env=alerter_env(broker, prefix, work, 1, "0"),
                                   stdout=open(work / "alerter.log", "wb"), stderr=subprocess.STDOUT)
        first_mark, started, reached, deadline = None, None, float("nan"), time.monotonic() + args.timeout
        while time.monotonic() < deadline and alerter.poll() is None:
            reached = watermark_of(port)
            if started is None and np.isfinite(reached) and reached > 0:
                first_mark, started = reached, time.monotonic()
            if np.isfinite(reached) and reached >= last_watermark:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started if started is not None else float("nan")
        rss = rss_mb(alerter.pid) if alerter.poll() is None else float("nan")
    finally:
        if alerter is not None and alerter.poll() is None:
            alerter.terminate()
            alerter.wait(timeout=60)
        broker.stop()
    done = bool(np.isfinite(reached) and reached >= last_watermark)
    moved = 0.0 if first_mark is None or not np.isfinite(reached) else (reached - first_mark) / 60.0
    return done, elapsed, rss, moved


def sharded(args, messages, work) -> tuple[bool, float, list[float]]:
    """``A`` alerters on ``P`` partitions: (done, seconds, RSS MB of each)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    partitions, count = args.sharded
    broker = LocalBroker(work / "kafka-sharded").start()
    alerters: list[subprocess.Popen] = []
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = Topics.from_settings(Settings(topic_prefix=prefix))
        create_topics(broker.bootstrap, topics.specs(1, partitions))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=8 << 20)
        for parts in messages:
            for partition, part in enumerate(parts):
                producer.send(topics.sli_buckets, key=b"bench-0", value=part, partition=partition)
        producer.flush()
        producer.close()
        tps = [TopicPartition(topics.sli_buckets, p) for p in range(partitions)]
        reader = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        ends = reader.end_offsets(tps)
        reader.close()
        ports = [free_port() for _ in range(count)]
        for i, port in enumerate(ports):
            alerters.append(subprocess.Popen(
                [sys.executable, "-m", "monitor", "alerter", "--instance", f"a-{i}", "--http-port", str(port)],
                env=alerter_env(broker, prefix, work, partitions, str(i)),
                stdout=open(work / f"alerter-{i}.log", "wb"), stderr=subprocess.STDOUT))
        group = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"{prefix}advmon-alerter",
                              enable_auto_commit=False)  # reads the group's commits; never joins it
        started, done, deadline = None, False, time.monotonic() + args.timeout
        while time.monotonic() < deadline and all(a.poll() is None for a in alerters):
            if started is None and any(np.isfinite(watermark_of(port)) for port in ports):
                started = time.monotonic()
            if started is not None and all((group.committed(tp) or 0) >= ends[tp] for tp in tps):
                done = True
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started if started is not None else float("nan")
        group.close()
        rss = [rss_mb(a.pid) if a.poll() is None else float("nan") for a in alerters]
    finally:
        for alerter in alerters:
            if alerter.poll() is None:
                alerter.terminate()
                alerter.wait(timeout=60)
        broker.stop()
    return done, elapsed, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=6)
    parser.add_argument("--rows-per-message", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the alerter gets for the backlog")
    parser.add_argument("--sharded", type=int, nargs=2, metavar=("PARTITIONS", "ALERTERS"),
                        help="also the same backlog through ALERTERS alerters sharing PARTITIONS partitions")
    args = parser.parse_args()

    messages, last_watermark, rows = backlog(args.clients, args.minutes, args.rows_per_message)
    work = Path(tempfile.mkdtemp(prefix="advmon-bench-alerter-"))
    done, elapsed, rss, moved = unsharded(args, messages, last_watermark, work)
    need = args.clients / 60.0  # rows a second: one per active client a minute, in real time
    print(f"{len(messages):,} sli-buckets messages of up to {args.rows_per_message:,} rows: {args.minutes} minutes of "
          f"{args.clients:,} active clients ({rows:,} rows), every shipped rule, state table with its changelog")
    if not done:
        print(f"advmon alerter did not finish within {args.timeout:.0f} s: its watermark moved {moved:.1f} minutes "
              f"(log: {work / 'alerter.log'})")
        return 1
    rate = (rows - rows / len(messages)) / elapsed  # the clock starts once the first message is applied
    print(f"{'advmon alerter (faust, one worker)':40} {rate:12,.0f} rows/s   ({rate / need:.1f}x real time at "
          f"{args.clients:,} active clients a minute; {elapsed:.1f} s; RSS {rss:.0f} MB at the end)")
    if not args.sharded:
        return 0
    parts, _, _ = backlog(args.clients, args.minutes, args.rows_per_message, args.sharded[0])
    done, elapsed, each = sharded(args, parts, work)
    label = f"advmon alerter x{args.sharded[1]} on {args.sharded[0]} partitions"
    if not done:
        print(f"{label}: did not finish within {args.timeout:.0f} s (logs: {work})")
        return 1
    rate = (rows - rows / len(parts)) / elapsed
    print(f"{label:40} {rate:12,.0f} rows/s   ({rate / need:.1f}x real time; {elapsed:.1f} s; RSS "
          f"{', '.join(f'{r:.0f}' for r in each)} MB at the end; the machine's cores shared by all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
