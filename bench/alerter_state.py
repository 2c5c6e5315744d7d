"""The alerter's durable state over time: store entries and traced memory with the shipped rules, as
many clients every minute as ``--clients``, through :class:`~monitor.alerting.durable.DurableAlerter`
with a plain dict as its store (the faust table holds the same entries). Per-client rows are kept as
long as the per-client rules look back (three hours with the shipped rules), per-model totals for the
SLO windows: the figures should grow for three hours of event time and then stay flat.

    python3 bench/alerter_state.py [--minutes 240] [--clients 2000] [--events-per-client 9]
    python3 bench/alerter_state.py --throughput --clients 100000 --minutes 6 [--partitions 5]

Prints, every 30 minutes of event time: stored entries, of them messages (per-client rows), and the memory
tracemalloc traces (store plus evaluators); at the end, the store's share of it. With ``--throughput``
(no tracing): the rows a second the durable alerter applies, and how many times real time that is for
that many active clients (one row per client a minute), after a first minute of warm-up; with ``--partitions``,
the alerter sharded over that many partitions (:class:`~monitor.alerting.sharded.ShardedAlerter`), each
partition timed on its own (on several alerters they run side by side), and the producers' cost of the split;
then the unsharded alerter on the same traffic, the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.alerting.durable import DurableAlerter  # noqa: E402
from monitor.alerting.sharded import ShardedAlerter  # noqa: E402
from monitor.contracts.shards import split  # noqa: E402
from monitor.contracts.sli import SliRows  # noqa: E402
from monitor.contracts.sli_buckets import SliBatch  # noqa: E402
from monitor.spec.rules import default_rules_dir, load_rules  # noqa: E402
from monitor.telemetry.export import export_alert_state  # noqa: E402
from monitor.telemetry.metrics import Metrics  # noqa: E402


def minute_batch(minute: int, names: np.ndarray, per: int, rng: np.random.Generator) -> SliBatch:
    """One minute of benign traffic from every client, as one ingest message."""
    n = len(names) * per
    ts = minute * 60 + rng.uniform(0, 60, n)
    rows = SliRows.from_columns(
        bucket=(ts // 60).astype(np.int64) * 60, model=np.full(n, "m", dtype=object), client=np.repeat(names, per),
        ts=ts, flags={"events": np.ones(n, bool), "traffic_events": np.ones(n, bool), "queries": np.ones(n, bool),
                      "anomalous": rng.random(n) < 0.01, "clean_events": np.ones(n, bool)},
        confidence=rng.uniform(0.5, 1, n), margin=rng.uniform(0, 1, n),
        bins={"label": rng.integers(0, 8, n), "input": rng.integers(0, 8, n), "margin_rank": rng.integers(0, 10, n)})
    return SliBatch("ingest-0", float(ts.max()), 0, {"inference-logs/0": (0, n)}, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=240)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--events-per-client", type=int, default=9)
    parser.add_argument("--throughput", action="store_true", help="rows/s instead of memory")
    parser.add_argument("--partitions", type=int, default=1, help="with --throughput: a sharded alerter")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = np.array([f"key_{i}" for i in range(args.clients)], dtype=object)
    if args.throughput and args.partitions > 1:
        sharded_throughput(names, args.minutes, args.events_per_client, args.partitions, rng)
        throughput(names, args.minutes, args.events_per_client, np.random.default_rng(0))  # the baseline, unsharded
        return
    if args.throughput:
        throughput(names, args.minutes, args.events_per_client, rng)
        return
    metrics = Metrics()
    tracemalloc.start()
    store: dict = {}
    alerter = DurableAlerter(load_rules(default_rules_dir()), store, bucket_s=60, grace_s=60, idle_source_s=1e12)
    print(f"per-client rows kept {alerter.client_retention_s / 3600:.2f} h, per-model totals "
          f"{alerter.retention_s / 86400:.2f} days")
    print("| minute | entries | messages kept | traced MB | wall s |\n|---:|---:|---:|---:|---:|")
    started = time.perf_counter()
    for minute in range(args.minutes):
        alerter.apply(minute, minute_batch(minute, names, args.events_per_client, rng), now=0.0)
        export_alert_state(metrics, alerter.alerter)  # as the daemon does: closed rows leave the alerter
        if minute % 30 == 29 or minute == args.minutes - 1:
            traced = tracemalloc.get_traced_memory()[0] / 2**20
            kept = sum(key.startswith("r\x1f") for key in store)
            print(f"| {minute + 1} | {len(store):,} | {kept:,} | {traced:.0f} | {time.perf_counter() - started:.0f} |",
                  flush=True)
    before = tracemalloc.get_traced_memory()[0]
    store.clear()
    print(f"the store: {(before - tracemalloc.get_traced_memory()[0]) / 2**20:.0f} MB of it")


def throughput(names: np.ndarray, minutes: int, per: int, rng: np.random.Generator) -> None:
    """The durable alerter (the faust alerter's core, a dict for its table) fed one minute of every client
    per message: rows/s over the minutes after the first."""
    alerter = DurableAlerter(load_rules(default_rules_dir()), {}, bucket_s=60, grace_s=60, idle_source_s=1e12)
    batches = [minute_batch(minute, names, per, rng) for minute in range(minutes)]
    metrics, rows, elapsed = Metrics(), 0, 0.0
    for minute, batch in enumerate(batches):
        started = time.perf_counter()
        alerter.apply(minute, batch, now=0.0)
        export_alert_state(metrics, alerter.alerter)
        if minute:  # the first minute builds the evaluators' state for every client
            elapsed += time.perf_counter() - started
            rows += len(batch.rows)
    need = len(names) / 60.0
    print(f"durable alerter, {len(names):,} active clients a minute, every shipped rule: {rows / elapsed:,.0f} rows/s "
          f"({rows / elapsed / need:.1f}x real time; {rows:,} rows in {elapsed:.1f} s)")


def sharded_throughput(names: np.ndarray, minutes: int, per: int, partitions: int, rng: np.random.Generator) -> None:
    """As :func:`throughput`, the alerter sharded: each partition's time apart, the slowest setting the pace."""
    sharded = ShardedAlerter(load_rules(default_rules_dir()), partitions, bucket_s=60, grace_s=60, idle_source_s=1e12)
    batches = [minute_batch(minute, names, per, rng) for minute in range(minutes)]
    metrics, rows, spent, splitting = Metrics(), 0, np.zeros(partitions), 0.0
    for minute, batch in enumerate(batches):
        started = time.perf_counter()
        parts = [type(part).decode(part.encode()) for part in split(batch, partitions)]  # as they travel
        took = time.perf_counter() - started
        for p, (alerter, part) in enumerate(zip(sharded.partitions, parts, strict=True)):
            started = time.perf_counter()
            alerter.apply(minute, part, now=0.0)
            export_alert_state(metrics, alerter.alerter)
            if minute:
                spent[p] += time.perf_counter() - started
        if minute:
            rows += len(batch.rows)
            splitting += took
    need = len(names) / 60.0
    print(f"sharded alerter on {partitions} partitions, {len(names):,} active clients a minute, every shipped rule:")
    for p, seconds in enumerate(spent):
        role = "model stage" if p == 0 else "client shard"
        print(f"  partition {p} ({role}): {seconds:.1f} s, {rows / seconds / need:.1f}x real time")
    print(f"  the slowest partition: {rows / spent.max():,.0f} rows/s of the whole stream "
          f"({rows / spent.max() / need:.1f}x real time); split, encode and decode of the parts: {splitting:.1f} s")


if __name__ == "__main__":
    main()
