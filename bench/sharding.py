"""The query index sharded by hash value, in process: is a two-round reduce exact, and what would it send?

    python3 bench/sharding.py                 # realistic records, 1 hour; 2, 3, 4 and 8 shards
    python3 bench/sharding.py --shards 2 4 --hours 2
    python3 bench/sharding.py --attack-hours 21 23   # digits-train-ref's day (bench/detection.py's cache), 21-23 h:
                                                     # benign traffic and Boundary spread over 30 keys

One matcher holds every query's hashes (`advmon matcher`, docs/scaling.md). Sharded by hash value
(``monitor.detect.sharded_matcher``), shard ``s`` of ``S`` holds the postings of the hashes ``h % S == s`` and
counts its part of each (query, earlier query) pair; the parts add up to the whole. A query is a near-duplicate
where the sum reaches the threshold ``T``, so some shard's part reaches ``ceil(T / S)``: round 1 sends those pairs,
round 2 asks the other shards for their part of each. This script lets the reduce decide the seals over the
realistic records' match-requests, has each shard in turn read them and follow the seals (timed), reduces every
seal, checks the result against one matcher's (every verdict, counter change, match edge and piece of evidence),
and prints per shard count how many pairs each round moves, the slowest shard's time beside one matcher's
and the reduce's.
The daemons run it (``advmon matcher --shards N``); ``bench/match_daemons.py`` times them on a broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402

from monitor.contracts.match_requests import MatchRequestBatch  # noqa: E402
from monitor.detect.engine import Engine  # noqa: E402
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.detect.sharded_matcher import MatchReduce, MatchShard  # noqa: E402
from monitor.settings import Settings  # noqa: E402

#: Bytes a pair takes on the wire: the two queries' 64-bit ids (its count fits their spare bits).
PAIR_BYTES = 16


def attack_records(start_h: float, end_h: float) -> list[bytes]:
    """The records of digits-train-ref's day (a scenario family with attacks) between two hours of it."""
    from detection import CACHE, load_day

    from monitor.sim.families import DAY_START, FAMILIES

    family = FAMILIES["digits-train-ref"]
    day = load_day(family.scaled(attacks=tuple(a for a in family.attacks if a.start_h < family.hours - 0.5)), CACHE)
    ts = np.array([orjson.loads(r)["ts"] for r in day.records])
    keep = (ts >= DAY_START + start_h * 3600) & (ts < DAY_START + end_h * 3600)
    return [r for r, kept in zip(day.records, keep.tolist(), strict=True) if kept]


def requests_of(records: list[bytes], batch_size: int = 4096) -> list[MatchRequestBatch]:
    """The records' match-requests, as ingest with remote matching sends them."""
    engine = Engine(Settings(fingerprint_secret="bench", remote_matching=True).engine_settings())
    out = []
    for start in range(0, len(records), batch_size):
        result = engine.process(parse_batch(records[start:start + batch_size]).batch)
        out.append(MatchRequestBatch("ingest-0", result.watermark, result.match_groups))
    return out


def timed_matcher(matcher: OrderedMatcher, requests: list[MatchRequestBatch]) -> tuple[MatchResult, float]:
    started = time.perf_counter()
    parts = []
    for request in requests:
        matcher.add(request, now=0.0)
        parts.append(matcher.advance(now=0.0))
    parts.append(matcher.flush())
    return MatchResult.concat(parts), time.perf_counter() - started


def sharded(shards: int, requests: list[MatchRequestBatch],
            seal_limit: int | None) -> tuple[MatchResult, MatchReduce, list[float], float, int]:
    """The reduce decides the seals as it reads; each shard then reads every request and follows the seals (round 1);
    the reduce asks every shard for the rest (round 2) and turns the answers into the result. Each role timed: the
    shards' seconds, the reduce's; and the largest message between them, in bytes."""
    reduce = MatchReduce(MatcherSettings(), shards, seal_limit)
    started = time.perf_counter()
    seals = []
    for offset, request in enumerate(requests):
        reduce.add(request, now=0.0, offset=offset)
        while (seal := reduce.decide(now=0.0)) is not None:
            seals.append(seal)
    while (seal := reduce.finish()) is not None:
        seals.append(seal)
    reduce_s = time.perf_counter() - started
    matchers, round_one, seconds = [], [], []
    for s in range(shards):
        shard = MatchShard(MatcherSettings(), shards, s)
        started = time.perf_counter()
        for offset, request in enumerate(requests):
            shard.add(request, now=0.0, offset=offset)
        round_one.append([shard.seal(seal) for seal in seals])
        seconds.append(time.perf_counter() - started)
        matchers.append(shard)
    results, largest = [], max(len(m.encode()) for mine in round_one for m in mine)
    for i in range(len(seals)):
        started = time.perf_counter()
        asks = [ask for mine in round_one for ask in reduce.take_pairs(mine[i])]
        reduce_s += time.perf_counter() - started
        for ask in asks:
            started = time.perf_counter()
            answer = matchers[ask.shard].answer(ask)
            seconds[ask.shard] += time.perf_counter() - started
            largest = max(largest, len(ask.encode()), len(answer.encode()))
            started = time.perf_counter()
            results += [r for r in [reduce.take_answers(answer)] if r is not None]
            reduce_s += time.perf_counter() - started
    return MatchResult.concat(results), reduce, seconds, reduce_s, largest


def differences(one: MatchResult, other: MatchResult) -> list[str]:
    """What differs between two results (empty: nothing), event by event and counter by counter."""
    a, b = one.verdicts, other.verdicts
    order_a, order_b = np.argsort(a.event_id.astype(str)), np.argsort(b.event_id.astype(str))
    out = [name for name in ("event_id", "near", "own", "cross", "matched_client", "duplicate")
           if not np.array_equal(getattr(a, name)[order_a], getattr(b, name)[order_b])]
    rows_a, rows_b = one.rows.combined(), other.rows.combined()
    key_a = np.lexsort((rows_a.client.astype(str), rows_a.model.astype(str), rows_a.bucket))
    key_b = np.lexsort((rows_b.client.astype(str), rows_b.model.astype(str), rows_b.bucket))
    same_rows = rows_a.values.shape == rows_b.values.shape and np.array_equal(rows_a.bucket[key_a],
                                                                               rows_b.bucket[key_b])
    if not same_rows or not np.allclose(rows_a.values[key_a], rows_b.values[key_b], rtol=0, atol=1e-9):
        out.append("counter changes")  # (float sums in another order differ by rounding: not a difference)
    if sorted(one.edges.combined().records(), key=str) != sorted(other.edges.combined().records(), key=str):
        out.append("match edges")
    if sorted(one.flagged.event_id.tolist()) != sorted(other.flagged.event_id.tolist()):
        out.append("evidence")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="realistic records at 10 events/s (default 1)")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--seal-limit", type=int, default=4096, help="queries a seal covers at most (0: no limit)")
    parser.add_argument("--attack-hours", type=float, nargs=2, metavar=("START", "END"),
                        help="digits-train-ref's day between these hours instead of the realistic records")
    args = parser.parse_args()
    records = attack_records(*args.attack_hours) if args.attack_hours else realistic(hours=args.hours).records
    requests = requests_of(records)
    one, one_s = timed_matcher(OrderedMatcher(MatcherSettings()), requests)
    n = len(one.verdicts)
    what = f"digits-train-ref {args.attack_hours[0]:g}-{args.attack_hours[1]:g} h" if args.attack_hours else \
        "realistic records"
    print(f"{n:,} queries of {what}; one matcher: {int(one.verdicts.near.sum()):,} near-duplicates, "
          f"{int(one.verdicts.cross.sum()):,} of another client's, {one_s:.2f} s")
    failed = False
    for shards in args.shards:
        result, reduce, seconds, reduce_s, largest = sharded(shards, requests, args.seal_limit or None)
        wrong = differences(one, result)
        failed |= bool(wrong)
        print(f"{shards} shards, {reduce.seals} seals: round 1 {reduce.sent / n:5.2f} pairs a query, round 2 "
              f"{reduce.asked / n:5.2f} asked ({(reduce.sent + 2 * reduce.asked) * PAIR_BYTES / n:4.0f} bytes a query "
              f"both ways); the slowest shard {max(seconds):.2f} s ({one_s / max(seconds):.1f}x one matcher), the "
              f"reduce {reduce_s:.2f} s; the largest message {largest / 1e3:,.0f} KB; "
              + ("one matcher's result" if not wrong else "DIFFERS: " + ", ".join(wrong)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
