"""End-to-end alert latency on a real broker: wall time from an attacker's first query (produced to
inference-logs) to its page at the alerter's sink, under steady benign load.

    python3 bench/latency.py [--attackers 20] [--benign-rate 500]

Events carry the wall clock as event time. Buckets of 10 s with 5 s of grace (the defaults are 60 s
and 60 s, which add about a minute and a half to every figure). A throwaway broker runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
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

from monitor.settings import Settings  # noqa: E402
from monitor.sim.toymodel import augment, load_digits_scaled  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402

RULES = """
slos:
  - {name: probe, sli: near_duplicate_query_rate, scope: client, objective: 0.99, min_events: 20,
     severities: [page], summary: black-box probing}
routes: [{receivers: [stdout], group_by: [slo, client_id]}]
"""


def event(i: int, client: str, x: np.ndarray) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "ts": time.time(), "client_id": client, "model": "m",
                         "input": {"features": np.round(x, 4).tolist()},
                         "prediction": {"label": "1", "confidence": 0.9}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=20)
    parser.add_argument("--benign-rate", type=float, default=500.0, help="benign events/s")
    parser.add_argument("--attack-rate", type=float, default=20.0, help="queries/s of each attacker")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between attackers' starts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="advmon-latency-"))
    (work / "rules").mkdir()
    (work / "rules" / "slos.yaml").write_text(RULES)
    broker = LocalBroker(work / "kafka").start()
    prefix = f"lat{uuid.uuid4().hex[:6]}."
    env = {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": broker.bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
           "ADVMON_BUCKET_SECONDS": "10", "ADVMON_GRACE_SECONDS": "5", "ADVMON_IDLE_SOURCE_SECONDS": "3",
           "ADVMON_OUTBOX_PATH": str(work / "outbox.sqlite3"), "ADVMON_ALERTER_DATA_DIR": str(work / "alerter-data"),
           "ADVMON_FINGERPRINT_SECRET": "latency-bench"}
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(broker.bootstrap, topics.specs(4))
    alerts_path = work / "alerts.jsonl"
    daemons = [
        subprocess.Popen(
            [sys.executable, "-m", "monitor", *a],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"{a[0]}.log", "wb"),
        )
        for a in (
            ["ingest", "--http-port", "0"],
            ["alerter", "--http-port", "0", "--rules", str(work / "rules"), "--alerts-out", str(alerts_path)],
        )
    ]
    try:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, acks="all")
        x, y = load_digits_scaled()
        rng = np.random.default_rng(0)
        benign, _ = augment(rng, x, y, 200_000)
        bases = rng.random((args.attackers, 64))
        time.sleep(8)  # the daemons join their groups
        started_at: dict[str, float] = {}
        watcher = SinkWatcher(alerts_path)
        tick, sent, i = 0.02, 0, 0
        run_s = args.attackers * args.every + 45
        begin = time.monotonic()
        while time.monotonic() - begin < run_s:
            now = time.monotonic() - begin
            for _ in range(int(args.benign_rate * tick)):
                client = f"benign-{rng.integers(0, 200)}"
                producer.send(topics.inference_logs, event(i, client, benign[i % len(benign)]), key=client.encode())
                i += 1
            for a in range(args.attackers):
                if now >= 5 + a * args.every and rng.random() < args.attack_rate * tick:
                    client = f"attacker-{a}"
                    started_at.setdefault(client, time.time())
                    probe = np.clip(bases[a] + rng.normal(0, 0.003, 64), 0, 1)
                    producer.send(topics.inference_logs, event(i, client, probe), key=client.encode())
                    i += 1
            sent = i
            watcher.poll()
            time.sleep(max(0.0, tick - ((time.monotonic() - begin) - now)))
        producer.flush()
        deadline = time.time() + 60
        while time.time() < deadline and not set(started_at) <= set(watcher.arrivals):
            watcher.poll()
            time.sleep(0.1)
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(timeout=60)
        broker.stop()
    arrivals = watcher.arrivals
    delays = sorted(arrivals[c] - started_at[c] for c in started_at if c in arrivals)
    missed = len(started_at) - len(delays)
    benign_pages = sum(1 for line in alerts_path.read_bytes().splitlines()
                       if (orjson.loads(line).get("client_id") or "").startswith("benign"))
    print(f"{sent:,} events in {run_s:.0f} s ({args.benign_rate:.0f}/s benign from 200 clients, "
          f"{args.attackers} attackers at {args.attack_rate:.0f} queries/s); buckets 10 s, grace 5 s")
    if delays:
        p = lambda q: delays[min(len(delays) - 1, int(round(q * (len(delays) - 1))))]  # noqa: E731
        print(
            f"first attacker query -> page at the sink: p50 {p(0.5):.1f} s, p99 {p(0.99):.1f} s, "
            f"max {delays[-1]:.1f} s ({len(delays)} attackers; {missed} not paged; {benign_pages} benign clients paged)"
        )
    else:
        print(f"no attacker was paged ({missed} missed); see {work}")
    return 0


class SinkWatcher:
    """Notes the wall time each attacker's first page line appears in the alerter's JSON Lines sink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.arrivals: dict[str, float] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        seen = time.time()
        for line in complete.splitlines():
            alert = orjson.loads(line)
            client = alert.get("client_id") or ""
            if alert["status"] == "firing" and client.startswith("attacker"):
                self.arrivals.setdefault(client, seen)


if __name__ == "__main__":
    sys.exit(main())
