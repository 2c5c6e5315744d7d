"""The faust alerter's sustainable rate on a real broker: ``advmon alerter`` (every shipped rule, its state table
with a changelog, exactly as deployed) reads a backlog of sli-buckets messages as fast as it can; the rows a
second it applies, and how many times real time that is for the active clients a minute the backlog holds.

    python3 bench/alerter.py [--clients 100000] [--minutes 6] [--rows-per-message 2000]

The backlog is ``--minutes`` of benign traffic from ``--clients`` clients, one row per client a minute (the
synthetic rows of ``bench/alerter_state.py``), cut into messages of ``--rows-per-message`` rows as ingest batches
of 4,096 events over about 2,000 clients are. The clock starts when the alerter has applied its first message
(faust's start-up and table recovery are not counted) and stops when its watermark gauge reaches the backlog's
last; the alerter's first minute (every client new to every evaluator) is included. Stops by itself after
``--timeout`` seconds and says how far it got. With ``BENCH_PROFILE=FILE`` the alerter runs under cProfile.
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

from monitor.contracts.sli_buckets import SliBatch  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from streams.broker import LocalBroker, free_port  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402


def backlog(clients: int, minutes: int, per_message: int) -> tuple[list[bytes], float, int]:
    """The sli-buckets messages (encoded), the last one's watermark, and the rows they hold."""
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
            messages.append(SliBatch("bench-0", watermark, 0, {"inference-logs/0": (offset, offset + events)},
                                     part).encode())
            offset += events
            rows += len(part)
    return messages, watermark, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=6)
    parser.add_argument("--rows-per-message", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the alerter gets for the backlog")
    args = parser.parse_args()

    from kafka import KafkaProducer

    messages, last_watermark, rows = backlog(args.clients, args.minutes, args.rows_per_message)
    work = Path(tempfile.mkdtemp(prefix="advmon-bench-alerter-"))
    broker = LocalBroker(work / "kafka").start()
    alerter = None
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = Topics.from_settings(Settings(topic_prefix=prefix))
        create_topics(broker.bootstrap, topics.specs(1))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=8 << 20)
        for message in messages:
            producer.send(topics.sli_buckets, key=b"bench-0", value=message)
        producer.flush()
        producer.close()
        port = free_port()
        env = {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": broker.bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
               "ADVMON_OUTBOX_PATH": str(work / "outbox.sqlite3"), "ADVMON_ALERTER_DATA_DIR": str(work / "data"),
               "ADVMON_IDLE_SOURCE_SECONDS": "100000"}
        profiled = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        alerter = subprocess.Popen([sys.executable, *profiled, "-m", "monitor", "alerter", "--http-port", str(port)],
                                   env=env, stdout=open(work / "alerter.log", "wb"), stderr=subprocess.STDOUT)
        first_mark, started, reached, deadline = None, None, float("nan"), time.monotonic() + args.timeout
        while time.monotonic() < deadline and alerter.poll() is None:
            try:
                reached = gauge(port, "advmon_watermark_seconds")
            except (urllib.error.URLError, ConnectionError, OSError):
                reached = float("nan")  # not serving yet
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
    need = args.clients / 60.0  # rows a second: one per active client a minute, in real time
    done = np.isfinite(reached) and reached >= last_watermark
    print(f"{len(messages):,} sli-buckets messages of up to {args.rows_per_message:,} rows: {args.minutes} minutes of "
          f"{args.clients:,} active clients ({rows:,} rows), every shipped rule, state table with its changelog")
    if not done:
        got = 0.0 if first_mark is None or not np.isfinite(reached) else (reached - first_mark) / 60.0
        print(f"advmon alerter did not finish within {args.timeout:.0f} s: its watermark moved {got:.1f} minutes "
              f"(log: {work / 'alerter.log'})")
        return 1
    rate = (rows - rows / len(messages)) / elapsed  # the clock starts once the first message is applied
    print(f"{'advmon alerter (faust, one worker)':40} {rate:12,.0f} rows/s   ({rate / need:.1f}x real time at "
          f"{args.clients:,} active clients a minute; {elapsed:.1f} s; RSS {rss:.0f} MB at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
