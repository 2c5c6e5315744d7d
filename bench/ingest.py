"""Ingest throughput on a real Kafka broker, beside the raw clients' consume+parse rate in the same run.

    python3 bench/ingest.py                    # starts a throwaway broker on 127.0.0.1, realistic 1.3 KB records
    python3 bench/ingest.py --records demo --duration 1h --bootstrap 127.0.0.1:9092
    python3 bench/ingest.py --broker-core 1    # the throwaway broker on core 1, the clients on the others

Prints events/s for: aiokafka getmany + orjson.loads (the floor an ingest worker cannot beat),
kafka-python poll + orjson.loads, and ``advmon ingest`` (parse + validate + engine + one Kafka
transaction per batch), and the ratios between them. One process, one core's worth of work. ``advmon ingest``
runs twice: on its own (it matches queries itself), and as a scale-out worker that leaves matching to
``advmon matcher`` (it publishes the queries' fingerprints to match-requests instead); and both again with each
batch's transaction in turn (``overlap_publish`` off: the next batch waits for it), the baseline of the overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402

from monitor.settings import Settings  # noqa: E402
from monitor.sim.synth import Scenario  # noqa: E402
from monitor.spec.rules import parse_duration  # noqa: E402
from monitor.telemetry.metrics import Metrics  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.http import Health  # noqa: E402
from streams.ingest import IngestWorker  # noqa: E402
from streams.produce import produce  # noqa: E402
from streams.topics import Topics, create_topics  # noqa: E402


def _parse(messages) -> None:
    for message in messages:
        try:
            orjson.loads(message.value)
        except orjson.JSONDecodeError:
            pass


async def aiokafka_rate(bootstrap: str, topic: str, n: int, parse: bool) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=1 << 20)
    await consumer.start()
    seen, started = 0, time.perf_counter()
    try:
        while seen < n:
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                seen += len(messages)
                if parse:
                    _parse(messages)
    finally:
        elapsed = time.perf_counter() - started
        await consumer.stop()
    return seen / elapsed


def kafka_python_rate(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_partition_fetch_bytes=1 << 20)
    seen, started = 0, time.perf_counter()
    try:
        while seen < n:
            for messages in consumer.poll(timeout_ms=1000, max_records=5000).values():
                seen += len(messages)
                _parse(messages)
    finally:
        elapsed = time.perf_counter() - started
        consumer.close()
    return seen / elapsed


async def ingest_rate(settings: Settings, profile, n: int, overlap: bool = True) -> tuple[float, dict]:
    metrics = Metrics()
    worker = IngestWorker(settings, metrics, Health(), profile)
    worker.overlap_publish = overlap
    task = asyncio.create_task(worker.run())
    while worker.batches == 0 and not task.done():
        await asyncio.sleep(0.01)
    started, base = time.perf_counter(), worker.records  # from the first batch: no start-up cost
    while worker.records < n and not task.done():
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    worker.stopping.set()
    await task
    stages = {}
    for sample in metrics.batch_seconds.collect()[0].samples:
        if sample.name.endswith("_sum"):
            stages[sample.labels["stage"]] = sample.value
    return (worker.records - base) / elapsed, stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="an existing broker (default: start a throwaway one)")
    parser.add_argument("--records", choices=("realistic", "demo"), default="realistic")
    parser.add_argument("--hours", type=float, default=2.0, help="realistic records: hours at 10 events/s")
    parser.add_argument("--duration", default="3h", help="demo event time to generate (3h is about 96k records)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--broker-core", type=int, help="pin the throwaway broker to this core and the clients to the "
                        "others, as with a broker on its own machine (default: all share every core)")
    args = parser.parse_args()

    if args.records == "realistic":
        made = realistic(hours=args.hours)
        records, profile = made.records, made.profile
    else:
        scenario = Scenario.build(seed=0, duration_s=parse_duration(args.duration))
        records = [r for chunk in scenario.chunks() for r in chunk.records]
        profile = scenario.reference_profile()
    broker = None
    if args.bootstrap is None:
        broker = LocalBroker(Path(tempfile.mkdtemp(prefix="advmon-bench-kafka-"))).start()
        if args.broker_core is not None:
            assert broker.process is not None
            subprocess.run(["taskset", "-a", "-p", "-c", str(args.broker_core), str(broker.process.pid)], check=True,
                           capture_output=True)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {args.broker_core})
    bootstrap = args.bootstrap or broker.bootstrap
    def fresh_topics(**roles: bool) -> tuple[Settings, Topics]:
        """Settings and topics of their own (a new prefix: a new consumer group), the records on them."""
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                            instance_id="bench", fingerprint_secret="bench-secret", **roles)
        topics = Topics.from_settings(settings)
        create_topics(bootstrap, topics.specs(args.partitions))
        produce(bootstrap, topics.inference_logs, records)
        return settings, topics

    try:
        settings, topics = fresh_topics()
        n = len(records)
        mean_bytes = sum(map(len, records)) / n
        raw_nopars = asyncio.run(aiokafka_rate(bootstrap, topics.inference_logs, n, parse=False))
        raw = asyncio.run(aiokafka_rate(bootstrap, topics.inference_logs, n, parse=True))
        kp = kafka_python_rate(bootstrap, topics.inference_logs, n)
        ingest, stages = asyncio.run(ingest_rate(settings, profile, n))
        in_turn = [asyncio.run(ingest_rate(fresh_topics()[0], profile, n, overlap=False))[0]]
        worker_settings, _ = fresh_topics(remote_matching=True)
        worker, worker_stages = asyncio.run(ingest_rate(worker_settings, profile, n))
        in_turn.append(asyncio.run(ingest_rate(fresh_topics(remote_matching=True)[0], profile, n, overlap=False))[0])
    finally:
        if broker is not None:
            broker.stop()
    pinned = "" if args.broker_core is None or broker is None else f" pinned to core {args.broker_core}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n:,} {args.records} records, {mean_bytes:,.0f} bytes mean, {args.partitions} partitions, local broker"
          + pinned)
    print(f"{'aiokafka getmany, no parse':40} {raw_nopars:12,.0f} records/s")
    print(f"{'aiokafka getmany + orjson.loads':40} {raw:12,.0f} records/s   (the floor)")
    print(f"{'kafka-python poll + orjson.loads':40} {kp:12,.0f} records/s   ({kp / raw:.2f}x aiokafka)")
    print(f"{'advmon ingest (one process)':40} {ingest:12,.0f} events/s    ({ingest / raw:.3f}x the floor)")
    print(f"{'advmon ingest, scale-out worker':40} {worker:12,.0f} events/s    ({worker / raw:.3f}x the floor; "
          "matching left to advmon matcher)")
    for name, rate, overlapped in (("one process", in_turn[0], ingest), ("scale-out worker", in_turn[1], worker)):
        print(f"{'  ' + name + ', transactions in turn':40} {rate:12,.0f} events/s    ({rate / raw:.3f}x the floor; "
              f"overlapped {overlapped / rate:.2f}x this)")
    for name, split in (("ingest", stages), ("scale-out worker", worker_stages)):
        total = sum(split.values()) or 1.0
        print(f"{name} time by stage: " + ", ".join(f"{k} {v / total:.0%}" for k, v in split.items())
              + f"; engine / parse = {split.get('engine', 0) / max(split.get('parse', 1e-9), 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
