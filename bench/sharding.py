"""The query index sharded by hash value, in process: is a two-round reduce exact, and what would it send?

    python3 bench/sharding.py                 # realistic records, 1 hour; 2, 3, 4 and 8 shards
    python3 bench/sharding.py --shards 2 4 --hours 2

One matcher holds every query's hashes (`advmon matcher`, docs/scaling.md). Sharded by hash value, shard ``s`` of
``S`` would hold the postings of the hashes ``h % S == s`` and count its part of each (query, earlier query) pair;
the parts add up to the whole (tests/detect/test_fingerprint.py). A query is a near-duplicate where the sum reaches
the threshold ``T``, so some shard's part reaches ``ceil(T / S)``: round 1 sends those pairs, round 2 asks the other
shards for their part of each. This script runs the shards one after another on the same queries, takes the
verdicts from the two rounds, checks them against one index's (every near-duplicate verdict, own or cross-client,
the other client named, the scores of near pairs) and prints per shard count how many pairs each round moves and
each shard's time beside one index's. It measures the protocol; the daemons do not run it (issue 17).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402

from monitor.contracts.match_requests import MatchGroup  # noqa: E402
from monitor.detect.engine import Engine  # noqa: E402
from monitor.detect.fingerprint import PairCounts, QueryIndex, QueryMatches  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.settings import Settings  # noqa: E402

#: Bytes a pair takes on the wire: the two queries' 64-bit ids (its count fits their spare bits).
PAIR_BYTES = 16


def fingerprinted(records: list[bytes], batch_size: int = 4096) -> MatchGroup:
    """The records' queries as the matcher receives them (one input kind), in matching order."""
    engine = Engine(Settings(fingerprint_secret="bench", remote_matching=True).engine_settings())
    groups = [g for start in range(0, len(records), batch_size)
              for g in engine.process(parse_batch(records[start:start + batch_size]).batch).match_groups if len(g)]
    kind = groups[0].kind
    group = MatchGroup.concat([g for g in groups if g.kind == kind])
    return group.take(np.lexsort((group.exact, group.event_id.astype(str), group.ts)))


def indexed(group: MatchGroup, clients: np.ndarray, hashes: np.ndarray) -> tuple[QueryIndex, QueryMatches,
                                                                                  PairCounts, float]:
    index = QueryIndex(group.threshold)
    started = time.perf_counter()
    matches, pairs = index.update_with_pairs(hashes, group.exact, group.ts, clients)
    return index, matches, pairs, time.perf_counter() - started


def keyed(pairs: PairCounts) -> np.ndarray:
    return (pairs.row << 32) | pairs.earlier


def two_rounds(parts: list[PairCounts], threshold: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The near pairs (keys, total counts) from the shards' parts: round 1 the pairs some shard counts at least
    ``ceil(threshold / S)`` of, round 2 every other shard's part of those; and how many pairs each round moved."""
    least = -(-threshold // len(parts))
    reported = [keyed(p)[p.count >= least] for p in parts]
    candidates = np.unique(np.concatenate(reported))
    totals = np.zeros(len(candidates), np.int64)
    asked = 0
    for part, sent in zip(parts, reported, strict=True):
        ask = ~np.isin(candidates, sent)  # round 2: what this shard did not send in round 1
        asked += int(ask.sum())
        keys, at = keyed(part), np.searchsorted(candidates, keyed(part))
        known = (at < len(candidates)) & (candidates[np.minimum(at, len(candidates) - 1)] == keys)
        np.add.at(totals, at[known], part.count[known])
    near = totals >= threshold
    return candidates[near], totals[near], sum(map(len, reported)), asked


def verdicts(keys: np.ndarray, totals: np.ndarray, index: QueryIndex, clients: np.ndarray) -> dict[str, np.ndarray]:
    """Per query, from its near pairs: near-duplicate of its own client's or another's, the best scores, and the
    other client of its best cross pair (ties: the earliest query), as :class:`QueryIndex` decides them."""
    n = len(clients)
    row, earlier = keys >> 32, keys & ((1 << 32) - 1)
    other = index.owners_of(earlier)
    same = other == clients[row]
    own, cross = np.zeros(n, np.int64), np.zeros(n, np.int64)
    np.maximum.at(own, row[same], totals[same])
    np.maximum.at(cross, row[~same], totals[~same])
    matched = np.zeros(n, np.uint64)
    pick = np.flatnonzero(~same)
    pick = pick[np.lexsort((earlier[pick], -totals[pick], row[pick]))]
    first = np.r_[True, row[pick][1:] != row[pick][:-1]] if len(pick) else np.empty(0, bool)
    matched[row[pick[first]]] = other[pick[first]]
    return {"own_score": own, "cross_score": cross, "matched_client": matched}


def compare(whole: QueryMatches, got: dict[str, np.ndarray], threshold: int) -> list[str]:
    """What differs from one index's verdicts (empty: nothing)."""
    own, cross = whole.own_flagged, whole.cross_flagged
    checks = {"own near-duplicates": (got["own_score"] >= threshold) == own,
              "cross near-duplicates": (got["cross_score"] >= threshold) == cross,
              "own scores": np.where(own, got["own_score"] == whole.own_score, True),
              "cross scores": np.where(cross, got["cross_score"] == whole.cross_score, True),
              "clients matched": np.where(cross, got["matched_client"] == whole.matched_client, True)}
    return [f"{name}: {int((~ok).sum())} queries" for name, ok in checks.items() if not ok.all()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="realistic records at 10 events/s (default 1)")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 3, 4, 8])
    args = parser.parse_args()
    group = fingerprinted(realistic(hours=args.hours).records)
    n, threshold = len(group), group.threshold
    clients = np.unique(group.client_id.astype(str), return_inverse=True)[1].astype(np.uint64) + 1
    index, whole, pairs, whole_s = indexed(group, clients, group.hashes)
    print(f"{n:,} queries of realistic records ({group.hashes.shape[1]} hashes, threshold {threshold}); one index: "
          f"{len(pairs) / n:.0f} pairs a query, {int((pairs.count >= threshold).sum()) / n:.2f} near pairs a query, "
          f"{int(whole.flagged.sum()):,} near-duplicate queries, {whole_s:.2f} s")
    failed = False
    for shards in args.shards:
        runs = [indexed(group, clients, np.where(group.hashes % np.uint64(shards) == s, group.hashes, np.uint64(0)))
                for s in range(shards)]
        keys, totals, sent, asked = two_rounds([r[2] for r in runs], threshold)
        differences = compare(whole, verdicts(keys, totals, runs[0][0], clients), threshold)
        failed |= bool(differences)
        seconds = [r[3] for r in runs]
        print(f"{shards} shards: round 1 {sent / n:5.2f} pairs a query, round 2 {asked / n:5.2f} asked "
              f"({(sent + 2 * asked) * PAIR_BYTES / n:4.0f} bytes a query both ways); the slowest shard "
              f"{max(seconds):.2f} s, {whole_s / max(seconds):.1f}x one index; verdicts "
              + ("the same as one index's" if not differences else "DIFFER: " + "; ".join(differences)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
