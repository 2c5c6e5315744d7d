"""The matcher's daemons on a real broker: one ``advmon matcher`` against S shards and a reduce, on the same
match-requests.

    python3 bench/match_daemons.py                 # throwaway broker; realistic records, 1 hour; 2 and 3 shards
    python3 bench/match_daemons.py --shards 2 --hours 2

Ingest's match-requests for the realistic records (as a scale-out worker sends them) are written to a fresh
match-requests topic, with a last request whose watermark closes every minute. Then the daemons start as
processes and the script waits for the matcher's (the reduce's) message on sli-buckets that says every minute is
matched. It prints, per set-up, the wall time from the end of every daemon's start-up (its partitions assigned) to
that message, and each process's CPU seconds over the same span (read from /proc): what a role costs per query,
whatever the cores of the machine it runs on. Every process shares this machine's cores with the broker.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402
from sharding import requests_of  # noqa: E402

from monitor.contracts.match_requests import MatchRequestBatch  # noqa: E402
from monitor.contracts.sli_buckets import SliBatch  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402

#: The last request's watermark: later than any event, so every minute closes.
CLOSING = 4e9
TIMEOUT_S = 600.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_requests(bootstrap: str, topic: str, requests: list[MatchRequestBatch]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20, linger_ms=20)
    sent = [producer.send(topic, chunk.encode(), partition=0)
            for request in [*requests, MatchRequestBatch("ingest-0", CLOSING, [])] for chunk in request.chunks()]
    producer.flush()
    for future in sent:
        future.get(timeout=30)  # raises what the broker refused
    producer.close()


def roles(shards: int) -> list[tuple[str, list[str]]]:
    if shards == 1:
        return [("matcher", [])]
    return [("reduce", ["--shard", "reduce"]), *((f"shard-{s}", ["--shard", str(s)]) for s in range(shards))]


def run(bootstrap: str, shards: int, requests: list[MatchRequestBatch], work: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds from every role's start-up to the all-matched message, and each role's CPU seconds."""
    from kafka import KafkaConsumer

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(bootstrap, topics.specs(1))
    write_requests(bootstrap, topics.match_requests, requests)
    env = {**os.environ, "ADVMON_KAFKA_BOOTSTRAP": bootstrap, "ADVMON_TOPIC_PREFIX": prefix,
           "ADVMON_MATCHER_SHARDS": str(shards), "ADVMON_FINGERPRINT_SECRET": "bench"}
    processes = {}
    for name, args in roles(shards):
        log = open(work / f"{prefix}{name}.log", "wb")
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "monitor", "matcher", *args, "--instance", name, "--http-port", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    consumer = KafkaConsumer(topics.sli_buckets, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", group_id=None, enable_auto_commit=False)
    try:
        started, cpu = wait_for_start(processes, work, prefix)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            done = [m for batch in consumer.poll(timeout_ms=50).values() for m in batch
                    if SliBatch.decode(m.value).watermark >= CLOSING - 3600]
            if done:
                break
        else:
            raise TimeoutError(f"{shards} shards: not every minute was matched within {TIMEOUT_S:.0f} s")
        elapsed = time.monotonic() - started
        used = {name: cpu_seconds(p.pid) - cpu[name] for name, p in processes.items()}
    finally:
        consumer.close()
        for p in processes.values():
            p.terminate()
        for p in processes.values():
            p.wait(timeout=60)
    return elapsed, used


def wait_for_start(processes: dict[str, subprocess.Popen], work: Path, prefix: str
                   ) -> tuple[float, dict[str, float]]:
    """Once every role's partitions are assigned: the time, and each one's CPU seconds so far (start-up)."""
    deadline, cpu = time.monotonic() + 120, {}
    while len(cpu) < len(processes):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not started: {sorted(set(processes) - set(cpu))}")
        for name, process in processes.items():
            if name not in cpu and re.search(r"partitions assigned: \S", (work / f"{prefix}{name}.log").read_text()):
                cpu[name] = cpu_seconds(process.pid)
        time.sleep(0.01)
    return time.monotonic(), cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="realistic records at 10 events/s (default 1)")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    requests = requests_of(realistic(hours=args.hours).records)
    n = sum(len(g) for r in requests for g in r.groups)
    megabytes = sum(len(r.encode()) for r in requests) / 1e6
    work = Path(tempfile.mkdtemp(prefix="advmon-bench-match-"))
    broker = LocalBroker(work / "kafka").start()
    try:
        results = {shards: run(broker.bootstrap, shards, requests, work) for shards in [1, *args.shards]}
    finally:
        broker.stop()
    print(f"{n:,} queries of realistic records ({megabytes:.1f} MB of match-requests), {os.cpu_count()} cores shared "
          "with the broker")
    one_wall, one_cpu = results[1][0], sum(results[1][1].values())
    for shards, (wall, cpu) in results.items():
        name = "one advmon matcher" if shards == 1 else f"{shards} shards + reduce"
        shard_cpu = [v for k, v in cpu.items() if k.startswith("shard")]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        print(f"{name:22} {wall:6.2f} s wall ({n / wall:8,.0f} queries/s, {one_wall / wall:.2f}x one matcher); "
              f"CPU s: {parts}" + (f"; the busiest shard {n / max(shard_cpu):,.0f} queries per CPU second "
                                   f"({one_cpu / max(shard_cpu):.2f}x one matcher's)" if shard_cpu else
                                   f" ({n / one_cpu:,.0f} queries per CPU second)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
