"""The faust alerter's sustainable rate on a real broker: ``advmon alerter`` (every shipped rule, its state table
with a changelog, exactly as deployed) reads a backlog of sli-buckets messages as fast as it can; the rows a
second it applies, and how many times real time that is for the active clients a minute the backlog holds.

    python3 bench/alerter.py [--clients 100000] [--minutes 6] [--rows-per-message 2000] [--sharded 3 2]

The backlog is ``--minutes`` of benign traffic from ``--clients`` clients, one row per client a minute (the
synthetic rows of ``bench/alerter_state.py``), cut into messages of ``--rows-per-message`` rows as ingest batches
of 4,096 events over about 2,000 clients are. The clock starts when the alerter has applied its first message
(faust's start-up and table recovery are not counted) and stops when the group's committed offsets reach the end of
every partition (up to a second late: faust commits every second); the alerter's first minute (every client new to
every evaluator) is included. Stops by itself after
``--timeout`` seconds and says how far it got. With ``BENCH_PROFILE=FILE`` the alerter runs under cProfile.

``--sharded P A`` then runs the same backlog through ``A`` alerters sharing ``P`` partitions (each message split
as ingest splits it, on a fresh broker), timed alike.
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
            ) -> tuple[list[list[bytes]], int]:
    """The sli-buckets messages (encoded, a part per partition) and the rows they hold."""
    rng = np.random.default_rng(0)
    names = np.array([f"key_{i}" for i in range(clients)], dtype=object)
    messages, rows, offset = [], 0, 0
    for minute in range(minutes):
        whole = minute_batch(minute, names, 1, rng).rows
        starts = range(0, len(whole), per_message)
        for n, start in enumerate(starts, start=1):
            part = whole.take(np.arange(start, min(start + per_message, len(whole))))
            events = int(part.column("events").sum())
            watermark = minute * 60 + 59.0 * n / len(starts)  # each message moves it, as ingest's batches do
            batch = SliBatch("bench-0", watermark, 0, {"inference-logs/0": (offset, offset + events)}, part)
            messages.append([p.encode() for p in split(batch, partitions)])
            offset += events
            rows += len(part)
    return messages, rows


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


def run(args, messages, work: Path, partitions: int, count: int) -> tuple[bool, float, list[float], str]:
    """``count`` alerters sharing ``partitions`` partitions (one and one: the unsharded alerter) read the backlog:
    (done, seconds, RSS MB of each, how far they got). The clock starts when an alerter has applied its first
    message (its watermark gauge is set) and stops when the group's committed offsets reach the end of every
    partition (faust commits every second: up to a second late, for every configuration alike)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker = LocalBroker(work / f"kafka-{partitions}-{count}").start()
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
            profiled = (["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
                        if os.environ.get("BENCH_PROFILE") and i == 0 else [])
            alerters.append(subprocess.Popen(
                [sys.executable, *profiled, "-m", "monitor", "alerter", "--instance", f"a-{i}", "--http-port",
                 str(port)], env=alerter_env(broker, prefix, work, partitions, f"{partitions}-{i}"),
                stdout=open(work / f"alerter-{partitions}-{i}.log", "wb"), stderr=subprocess.STDOUT))
        group = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"{prefix}advmon-alerter",
                              enable_auto_commit=False)  # reads the group's commits; never joins it
        started, done, deadline = None, False, time.monotonic() + args.timeout
        committed = dict.fromkeys(tps, 0)
        while time.monotonic() < deadline and all(a.poll() is None for a in alerters):
            if started is None and any(np.isfinite(watermark_of(port)) for port in ports):
                started = time.monotonic()
            committed = {tp: group.committed(tp) or 0 for tp in tps}
            if started is not None and all(committed[tp] >= ends[tp] for tp in tps):
                done = True
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started if started is not None else float("nan")
        group.close()
        rss = [rss_mb(a.pid) if a.poll() is None else float("nan") for a in alerters]
    finally:
        for alerter in alerters:
            if alerter.poll() is None:
                alerter.terminate()
                alerter.wait(timeout=60)
        broker.stop()
    return done, elapsed, rss, f"{sum(committed.values()):,} of {sum(ends.values()):,} messages committed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=6)
    parser.add_argument("--rows-per-message", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the alerter gets for the backlog")
    parser.add_argument("--sharded", type=int, nargs=2, metavar=("PARTITIONS", "ALERTERS"),
                        help="also the same backlog through ALERTERS alerters sharing PARTITIONS partitions")
    args = parser.parse_args()

    messages, rows = backlog(args.clients, args.minutes, args.rows_per_message)
    work = Path(tempfile.mkdtemp(prefix="advmon-bench-alerter-"))
    need = args.clients / 60.0  # rows a second: one per active client a minute, in real time
    print(f"{len(messages):,} sli-buckets messages of up to {args.rows_per_message:,} rows: {args.minutes} minutes of "
          f"{args.clients:,} active clients ({rows:,} rows), every shipped rule, state table with its changelog")
    runs = [(1, 1, "advmon alerter (faust, one worker)", messages)]
    if args.sharded:
        parts, _ = backlog(args.clients, args.minutes, args.rows_per_message, args.sharded[0])
        runs.append((*args.sharded, f"advmon alerter x{args.sharded[1]} on {args.sharded[0]} partitions", parts))
    for partitions, count, label, backlog_parts in runs:
        done, elapsed, rss, reached = run(args, backlog_parts, work, partitions, count)
        if not done:
            print(f"{label}: did not finish within {args.timeout:.0f} s: {reached} (logs: {work})")
            return 1
        rate = (rows - rows / len(backlog_parts)) / elapsed  # the clock starts once the first message is applied
        print(f"{label:40} {rate:12,.0f} rows/s   ({rate / need:.1f}x real time at {args.clients:,} active clients "
              f"a minute; {elapsed:.1f} s; RSS {', '.join(f'{r:.0f}' for r in rss)} MB at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
