"""Soak: ``advmon ingest`` workers, ``advmon matcher`` and ``advmon alerter`` at a steady rate on a local broker,
with each daemon's RSS and each consumer group's lag every minute (both should stay flat), bounded in time.

    python3 bench/soak.py --minutes 60 --rate 200        # starts a throwaway broker on 127.0.0.1
    python3 bench/soak.py --ingest-workers 1 --no-matcher  # one ingest worker matching its own queries
    python3 bench/soak.py --scorer                         # and `advmon scorer` takes the embeddings (numpy here)
    python3 bench/soak.py --matcher-shards 2               # the matcher sharded: two shards and the reduce
    python3 bench/soak.py --minutes 80 --event-speed 4     # 5 h 20 min of event time: past the 3 h look-back

Traffic: realistic 1.3 KB records (bench/realistic.py: 64 features, a base64 embedding, logits; 2,000 clients)
re-stamped with the current time and fresh event ids as they are sent, so event time advances with the clock;
with ``--event-speed S`` it advances S times as fast, from (S - 1) x the run's length in the past to now, so that
the alerter's per-client look-back (3 hours with the shipped rules) fills within the run and the RSS after it shows
whether memory stays flat (the events per event-time minute are then ``rate x 60 / S``; never in the future).
The pool holds ``--pool-hours`` of it at 10 events/s (144,000 records for 4 h): more than the fingerprint
index's two generations of 50,000 queries, so a record that comes round again is no near-duplicate of its
earlier copy (a short pool repeating every minute looks like replayed queries and pages).
Prints a Markdown table (minute, events sent, RSS per daemon, lag per consumer group) and each daemon's RSS
slope over the second half of the run, or, with ``--event-speed``, over the minutes after the look-back filled.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402

from monitor.settings import Settings  # noqa: E402
from streams.broker import LocalBroker, free_port  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def group_lags(bootstrap: str, groups: dict[str, str]) -> dict[str, int]:
    """Records behind the end of the log, per daemon (name -> its consumer group)."""
    from kafka import KafkaAdminClient, KafkaConsumer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        lags = {}
        for name, group in groups.items():
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            for topic in {tp.topic for tp in offsets}:  # kafka-python asks only for the topics its metadata knows
                consumer.partitions_for_topic(topic)
            ends = consumer.end_offsets(list(offsets)) if offsets else {}
            lags[name] = sum(max(0, ends[tp] - o.offset) for tp, o in offsets.items())
        return lags
    finally:
        consumer.close()
        admin.close()


def gauge(port: int, name: str) -> float:
    """One unlabelled gauge from a daemon's /metrics (NaN when absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


class EventClock:
    """Event time that runs ``speed`` times as fast as the wall clock and reaches it after ``seconds``.

    >>> clock = EventClock(speed=4.0, seconds=600.0, start=1000.0)
    >>> clock.at(1000.0), clock.at(1600.0), clock.elapsed(1150.0)
    (-800.0, 1600.0, 600.0)
    """

    def __init__(self, speed: float, seconds: float, start: float) -> None:
        self.speed, self.start = speed, start
        self.origin = start - (speed - 1.0) * seconds

    def at(self, wall: float) -> float:
        return self.origin + self.speed * (wall - self.start)

    def elapsed(self, wall: float) -> float:
        """Event-time seconds since the run started."""
        return self.speed * (wall - self.start)


def restamped(records: list[bytes], clock: EventClock):
    """The records over and over, each with the event clock's time and a new event id."""
    for n, raw in enumerate(itertools.cycle(records)):
        doc = orjson.loads(raw)
        doc["ts"], doc["event_id"] = clock.at(time.time()), f"soak-{n}"
        yield doc["client_id"].encode(), orjson.dumps(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--bootstrap", help="an existing broker (default: start a throwaway one)")
    parser.add_argument("--pool-hours", type=float, default=4.0, help="hours of traffic at 10 events/s to cycle")
    parser.add_argument("--ingest-workers", type=int, default=2)
    parser.add_argument("--no-matcher", action="store_true", help="each ingest worker matches its own queries")
    parser.add_argument("--scorer", action="store_true", help="ingest leaves the embeddings to `advmon scorer`")
    parser.add_argument("--matcher-shards", type=int, default=1, help="above 1: that many shards and the reduce")
    parser.add_argument("--event-speed", type=float, default=1.0,
                        help="event time runs this many times as fast as the clock (ending at the clock)")
    parser.add_argument("--look-back-hours", type=float, default=3.0,
                        help="with --event-speed: the slope is taken after this much event time")
    args = parser.parse_args()
    if args.event_speed < 1.0:
        parser.error("--event-speed must be at least 1")

    from kafka import KafkaProducer

    work = Path(tempfile.mkdtemp(prefix="advmon-soak-"))
    made = realistic(hours=args.pool_hours, rate=10.0)
    made.profile.save(str(work / "profile.npz"))
    broker = None if args.bootstrap else LocalBroker(work / "kafka").start()
    bootstrap = args.bootstrap or broker.bootstrap
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(bootstrap, topics.specs(6))
    env = {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
           "ADVMON_FINGERPRINT_SECRET": "soak-secret", "ADVMON_OUTBOX_PATH": str(work / "outbox.sqlite3"),
           "ADVMON_ALERTER_DATA_DIR": str(work / "alerter-data"), "ADVMON_PROFILE_PATH": str(work / "profile.npz")}
    remote = ([] if args.no_matcher else ["--remote-matching"]) + (["--remote-scoring"] if args.scorer else [])
    commands = {f"ingest-{i}": ["ingest", "--instance", f"ingest-{i}", *remote] for i in range(args.ingest_workers)}
    commands |= {"scorer": ["scorer", "--instance", "scorer-0"]} if args.scorer else {}
    shards = args.matcher_shards
    if args.no_matcher:
        pass
    elif shards == 1:
        commands["matcher"] = ["matcher"]
    else:
        commands["match-reduce"] = ["matcher", "--shards", str(shards), "--shard", "reduce", "--instance", "m-0"]
        commands |= {f"match-shard-{k}-of-{shards}": ["matcher", "--shards", str(shards), "--shard", str(k),
                                                      "--instance", f"s-{k}"] for k in range(shards)}
    commands["alerter"] = ["alerter"]
    ports = {name: free_port() for name in commands}
    daemons = {name: subprocess.Popen([sys.executable, "-m", "monitor", *command, "--http-port", str(ports[name])],
                                      env=env, stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
               for name, command in commands.items()}
    matchers = [name for name in commands if name.startswith("match")]  # one matcher, or the shards and the reduce
    groups = {role: f"{prefix}advmon-{role}" for role in ("ingest", "scorer", *matchers, "alerter")
              if role == "ingest" or role in commands}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, enable_idempotence=True)
    rows, sent, started = [], 0, time.monotonic()
    clock = EventClock(args.event_speed, args.minutes * 60.0, time.time())
    source = restamped(made.records, clock)
    print(f"soak: {args.minutes} min at {args.rate:g} events/s, {made.mean_bytes:,.0f}-byte records, "
          f"{made.clients:,} clients, event time at {args.event_speed:g}x the clock; logs in {work}", flush=True)
    columns = [f"{name} RSS MB" for name in daemons] + [f"{role} lag (records)" for role in groups]
    print(f"| minute | event time (h) | events sent | {' | '.join(columns)} "
          "| alerter watermark behind event time (s) |")
    print("|---:|---:|---:|" + "---:|" * (len(columns) + 1), flush=True)
    try:
        for minute in range(1, args.minutes + 1):
            while time.monotonic() - started < minute * 60:
                due = int((time.monotonic() - started) * args.rate) - sent
                for key, value in itertools.islice(source, max(0, due)):
                    producer.send(topics.inference_logs, value, key=key)
                    sent += 1
                time.sleep(0.05)
            producer.flush()
            dead = [name for name, process in daemons.items() if process.poll() is not None]
            if dead:
                raise SystemExit(f"soak: {', '.join(dead)} exited; see {work}")
            lags = group_lags(bootstrap, groups)
            rss = {name: rss_mb(process.pid) for name, process in daemons.items()}
            now = time.time()
            behind = clock.at(now) - gauge(ports["alerter"], "advmon_watermark_seconds")
            hours = clock.elapsed(now) / 3600
            rows.append((minute, rss, lags, behind, hours))
            cells = [f"{v:.0f}" for v in rss.values()] + [f"{v:,}" for v in lags.values()]
            print(f"| {minute} | {hours:.2f} | {sent:,} | {' | '.join(cells)} | {behind:.0f} |", flush=True)
    finally:
        producer.close()
        for process in daemons.values():
            process.terminate()
        for process in daemons.values():
            process.wait(timeout=60)
        if broker is not None:
            broker.stop()
    filled = [r for r in rows if r[4] >= args.look_back_hours] if args.event_speed > 1 else []
    half = filled if len(filled) >= 2 else [r for r in rows if r[0] > len(rows) / 2]
    what = f"after {args.look_back_hours:g} h of event time" if half is filled else "over the second half"
    if len(half) >= 2:
        minutes = np.array([r[0] for r in half], float)
        for name in daemons:
            rss = np.array([r[1][name] for r in half])
            slope = np.polyfit(minutes, rss, 1)[0] * 60
            print(f"{name}: RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB {what} (minutes {half[0][0]}-{half[-1][0]}), "
                  f"slope {slope:+.1f} MB/hour of wall time")
        for role in groups:
            print(f"{role}: committed lag at most {max(r[2][role] for r in rows):,} records, "
                  f"last {rows[-1][2][role]:,}")
        print(f"alerter watermark behind event time: at most {max(r[3] for r in rows):.0f} s, last {rows[-1][3]:.0f} s "
              "(its grace and the 60 s bucket make about two minutes normal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
