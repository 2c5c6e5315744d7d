"""Do the daemons alert like ``advmon replay`` with 1, 2 or 3 ingest workers? Simulated in one process, without
a broker: realistic records with hundreds of clients and attacks (a detection family, not the demo) are spread
over input partitions by client as Kafka's keying does, each simulated worker reads its partitions in batches
of random sizes (so partitions run ahead of each other by minutes), and the messages the workers, the matcher
and the alerter would exchange go through the same code as on Kafka (engine with remote matching,
``OrderedMatcher``, ``DurableAlerter``), in the order they would arrive. The oracle is the in-process runtime
on the file (``advmon replay``).

    python3 bench/order.py [--family digits-window-ref] [--hours 3] [--workers 1 2 3] [--alerter-partitions 1 3]

Prints, per worker count, how many of replay's settled alert transitions the simulated daemons gave exactly
(same alert id: same event time) and which differed, and how far their margin ranks are from replay's (each
worker ranks an event against the margins of its own partitions' traffic): with the matcher
(``ADVMON_REMOTE_MATCHING=true``), and with each worker matching its own queries (without it; one worker matches
the same either way). With
``--alerter-partitions``, each run is repeated with the alerter sharded over that many partitions
(:class:`~monitor.alerting.sharded.ShardedAlerter`: a model stage and client shards).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.alerting.sharded import ShardedAlerter  # noqa: E402
from monitor.contracts.match_requests import MatchRequestBatch  # noqa: E402
from monitor.contracts.sli import MARGIN_RANK_BINS, SliRows  # noqa: E402
from monitor.contracts.sli_buckets import SliBatch  # noqa: E402
from monitor.detect.engine import Engine, EngineSettings  # noqa: E402
from monitor.detect.matcher import MatcherSettings, OrderedMatcher  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.detect.watermarks import PartitionWatermarks  # noqa: E402
from monitor.runtime.inprocess import InProcessRuntime  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from monitor.sim.evaluation import reference_profile  # noqa: E402
from monitor.sim.families import FAMILIES, generate  # noqa: E402
from monitor.spec.rules import default_rules_dir, load_rules  # noqa: E402

PARTITIONS = 6
SECRET = b"bench-order"


def replay(records, profile, rules):
    settings = Settings.load({"fingerprint_secret": SECRET.decode()}, environ={})
    rows: list[SliRows] = []
    runtime = InProcessRuntime.build(settings, rules, sinks=[], profile=profile,
                                     on_batch=lambda result: rows.append(result.rows))
    runtime.pipeline.routes = []
    for start in range(0, len(records), 4096):
        runtime.feed(records[start:start + 4096])
    runtime.finish()
    return runtime.stats.alerts, SliRows.concat(rows)


def rank_histograms(rows: SliRows) -> dict[tuple, np.ndarray]:
    """Each (minute, model, client)'s margin-rank histogram, summed over its rows; only those with ranked events."""
    merged = rows.combined()
    histograms = np.column_stack([merged.column(name) for name in MARGIN_RANK_BINS])
    keys = zip(merged.bucket.tolist(), merged.model.tolist(), merged.client.tolist(), strict=True)
    return {key: row for key, row in zip(keys, histograms, strict=True) if row.sum() > 0}


def rank_difference(replayed: dict[tuple, np.ndarray], got: dict[tuple, np.ndarray]) -> str:
    """How far the daemons' margin ranks are from replay's: client-minutes whose histograms differ, ranked events
    in another tenth, and the lowest tenth's count (the suspicious end the client tests read)."""
    keys = replayed.keys() | got.keys()
    empty = np.zeros(len(MARGIN_RANK_BINS))
    diffs = np.array([got.get(k, empty) - replayed.get(k, empty) for k in keys])
    total = sum(row.sum() for row in replayed.values())
    moved = np.abs(diffs).sum() / 2
    lowest = (sum(row[0] for row in replayed.values()), sum(row[0] for row in got.values()))
    return (f"margin ranks: {int((np.abs(diffs).sum(axis=1) > 1e-9).sum()):,} of {len(keys):,} client-minutes differ "
            f"from replay's, {moved / max(total, 1):.2%} of {total:,.0f} ranked events in another tenth; below 0.1: "
            f"{lowest[1]:,.0f} against {lowest[0]:,.0f}")


def daemons(records, profile, rules, workers: int, local: bool, seed: int, alerter_partitions: int = 1,
            in_step: bool = False):
    """The records through ``workers`` simulated ingest workers (and the matcher), alerts in arrival order and the
    rows they sent. Each reads random amounts of its partitions (which then run hours apart in event time), or
    ``in_step``: each partition up to the same event time, 30 s further at every round (a caught-up stream). The
    last record (the closing one) comes alone, after a quiet spell in which the drained partitions go idle."""
    rng = np.random.default_rng(seed)
    partition_of = [zlib.crc32(orjson.loads(r)["client_id"].encode()) % PARTITIONS for r in records]
    queues = [[r for r, p in zip(records[:-1], partition_of, strict=False) if p == k] for k in range(PARTITIONS)]
    times = [np.array([orjson.loads(r)["ts"] for r in queue]) for queue in queues]
    start = min(t[0] for t in times if len(t))
    names = [f"logs/{k}" for k in range(PARTITIONS)]
    settings = EngineSettings(fingerprint_secret=SECRET, remote_matching=not local)
    engines = [Engine(settings, profile) for _ in range(workers)]
    # Simulated wall time: a step of 0.1 s per batch, the workers in turn. A caught-up partition stops holding
    # its worker's watermark at once; a source not heard from for a round of every worker stops holding the
    # matcher's and the alerter's (as ADVMON_IDLE_SOURCE_SECONDS does in wall time).
    idle = 0.1 * (workers + 1) + 0.01
    marks = [PartitionWatermarks(idle_s=0.01) for _ in range(workers)]
    matcher = OrderedMatcher(MatcherSettings(idle_source_s=idle))
    alerter = ShardedAlerter(rules, alerter_partitions, bucket_s=60, grace_s=60, idle_source_s=idle,
                             baselines=profile.baselines)
    alerts: list = []
    rows: list[SliRows] = []
    clock = {"now": 0.0, "offset": 0}

    def deliver(w: int, taken: dict[int, list[bytes]], backlog: dict[str, int]) -> None:
        batch = [r for k in sorted(taken) for r in taken[k]]
        if not batch:
            return
        now = clock["now"]
        marks[w].observe({names[k]: max(orjson.loads(r)["ts"] for r in rs) for k, rs in taken.items() if rs}, now)
        watermark, holding = marks[w].watermark(backlog, now), marks[w].holding(backlog, now)
        result = engines[w].process(parse_batch(batch).batch, watermark)
        for other in engines[:w] + engines[w + 1:]:  # margin-counts, read by every other worker
            other.learn_margins(result.margin_counts)
        messages = [SliBatch(f"ingest-{w}", watermark, 0, {}, result.rows, result.flagged, edges=result.edges,
                             remote_matching=not local, partitions=holding, inputs=("logs", PARTITIONS))]
        if not local:
            matcher.add(MatchRequestBatch(f"ingest-{w}", watermark, result.match_groups, holding,
                                          ("logs", PARTITIONS)), now)
            matched = matcher.advance(now)
            messages.append(SliBatch("matcher-0", matcher.watermark(now), 0, {}, matched.rows, matched.flagged,
                                     role="matcher", edges=matched.edges))
        rows.extend(message.rows for message in messages)
        for message in messages:
            alerts.extend(alerter.apply(clock["offset"], message, now))
            clock["offset"] += 1

    read = [0] * PARTITIONS
    step = 0
    while any(read[k] < len(queues[k]) for k in range(PARTITIONS)):
        clock["now"] += 0.1
        step += 1
        w = step % workers
        mine = [k for k in range(PARTITIONS) if k % workers == w]
        taken = {}
        until = start + 30.0 * ((step - 1) // workers + 1)
        for k in mine:
            end = int(np.searchsorted(times[k], until, "right")) if in_step else read[k] + int(rng.integers(50, 700))
            taken[k] = queues[k][read[k]:end]
            read[k] += len(taken[k])
        deliver(w, taken, {names[k]: len(queues[k]) - read[k] for k in mine})
    clock["now"] += 10 * idle
    last = partition_of[-1]
    owner = last % workers
    deliver(owner, {last: records[-1:]}, {names[k]: 0 for k in range(PARTITIONS) if k % workers == owner})
    return alerts, SliRows.concat(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="digits-window-ref", choices=sorted(FAMILIES))
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alerter-partitions", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    day = generate(FAMILIES[args.family].compressed(args.hours))  # the day's shape: attacks among benign traffic
    profile = reference_profile(day)
    rules = load_rules(default_rules_dir())
    last_ts = max(orjson.loads(r)["ts"] for r in day.records[-2000:])
    closing = orjson.dumps({"event_id": "closing", "ts": last_ts + 600, "client_id": "closer", "model": "m",
                            "prediction": {"label": "1", "confidence": 0.9}})
    records = [*day.records, closing]  # moves every partition's event time past the last minute (as in the e2e)
    clients = len({orjson.loads(r)["client_id"] for r in records})
    oracle, oracle_rows = replay(records, profile, rules)
    oracle_ranks = rank_histograms(oracle_rows)
    settle = last_ts  # transitions every simulated daemon's watermark has certainly passed
    wanted = {a.alert_id: a for a in oracle if (a.resolved_at or a.fired_at) < settle}
    print(f"{args.family}, {args.hours:g} h: {len(records):,} records, {clients} clients, {PARTITIONS} partitions; "
          f"replay: {len(wanted)} settled transitions "
          f"({sum(a.severity == 'page' for a in wanted.values())} of pages)")
    runs = [(n, False, p) for p in args.alerter_partitions for n in args.workers]
    runs += [(n, True, p) for p in args.alerter_partitions for n in args.workers if n > 1]
    for workers, local, partitions in runs:
        got, rows = daemons(records, profile, rules, workers, local, args.seed, partitions)
        ids = {a.alert_id for a in got}
        missing = [a for a in wanted.values() if a.alert_id not in ids]
        extra = [a for a in got if a.alert_id not in wanted and (a.resolved_at or a.fired_at) < settle]
        pages = [a for a in missing if a.severity == "page"]
        sharding = f", alerter on {partitions} partitions" if partitions > 1 else ""
        print(f"  {workers} worker(s){' matching their own' if local else ' + matcher'}{sharding}: "
              f"{len(wanted) - len(missing)}/{len(wanted)} transitions as replay ({len(pages)} pages differ), "
              f"{len(extra)} not in replay")
        if partitions == args.alerter_partitions[0]:  # the ranks come from the workers, whatever the alerter
            print(f"    {rank_difference(oracle_ranks, rank_histograms(rows))}")
    print("  reading every partition up to the same event time (a caught-up stream), with the matcher:")
    for workers in args.workers:
        got, rows = daemons(records, profile, rules, workers, False, args.seed, in_step=True)
        ids = {a.alert_id for a in got}
        missing = [a for a in wanted.values() if a.alert_id not in ids]
        extra = [a for a in got if a.alert_id not in wanted and (a.resolved_at or a.fired_at) < settle]
        print(f"  {workers} worker(s): {sum(k in ids for k in wanted)}/{len(wanted)} transitions as replay; "
              f"{rank_difference(oracle_ranks, rank_histograms(rows))}")
        for a in sorted(missing + extra, key=lambda a: a.resolved_at or a.fired_at)[:12]:
            side = "replay only" if a in missing else "daemons only"
            print(f"    {side:12} {a.rule:30} {a.status:9} {a.resolved_at or a.fired_at:.0f} {a.client_id or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
