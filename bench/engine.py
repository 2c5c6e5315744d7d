"""In-process figures: parse and engine events/s beside the plain orjson parse of the same records (the
floor), ``advmon replay`` on a file beside the floor on that file, the per-event cost of our SLI + drift
updates beside calling river's detector per event, the memory per tracked client and per stored
fingerprint, and ``advmon matcher``'s queries a second (decoding its match-requests included) live and when it
rebuilds its index from its log after a restart, and the engine at steady state (its query index full, after
hours of traffic). Realistic 1.3 KB records by default (``bench/realistic.py``), or the demo's 500-byte ones.

    python3 bench/engine.py [--records realistic|demo] [--hours 1] [--duration 3h] [--steady-hours 4]
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from river import drift  # the baseline; imported here so that no timing below includes importing it

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realistic import realistic  # noqa: E402

from monitor.alerting.alerter import Alerter  # noqa: E402
from monitor.contracts.match_requests import MatchRequestBatch  # noqa: E402
from monitor.contracts.sli import SliRows  # noqa: E402
from monitor.detect.engine import Engine  # noqa: E402
from monitor.detect.matcher import MatcherSettings, OrderedMatcher  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.detect.profiles import Profile  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from monitor.sim.synth import Scenario  # noqa: E402
from monitor.spec.rules import default_rules_dir, load_rules, parse_duration  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def demo_records(duration: str) -> tuple[list[bytes], Profile, str]:
    scenario = Scenario.build(seed=0, duration_s=parse_duration(duration))
    return ([r for chunk in scenario.chunks() for r in chunk.records], scenario.reference_profile(),
            "demo records (2 models; raw features, embeddings and logits)")


def realistic_records(hours: float) -> tuple[list[bytes], Profile, str]:
    made = realistic(hours=hours)
    return made.records, made.profile, (f"realistic records of {made.mean_bytes:,.0f} bytes (64 features, base64 "
                                        f"embedding, 10 logits; {made.clients:,} clients)")


def floor_of(records: list[bytes]) -> float:
    def plain():
        for record in records:
            try:
                orjson.loads(record)
            except orjson.JSONDecodeError:
                pass

    return min(timed(plain) for _ in range(3))


def replay_rates(records: list[bytes], profile: Profile) -> tuple[float, float, float]:
    """``advmon replay FILE --profile P`` in a fresh process (start-up included), and the floor on the same
    file: read the lines and orjson.loads each."""
    with tempfile.TemporaryDirectory(prefix="advmon-bench-") as work:
        path, profile_path = Path(work) / "events.jsonl", Path(work) / "profile.npz"
        path.write_bytes(b"\n".join(records) + b"\n")
        profile.save(str(profile_path))

        def plain():
            with open(path, "rb") as handle:
                for line in handle:
                    orjson.loads(line)

        floor_s = min(timed(plain) for _ in range(3))
        command = [sys.executable, "-m", "monitor", "replay", str(path), "--profile", str(profile_path)]
        replay_s = timed(lambda: subprocess.run(command, check=True, capture_output=True, cwd=work))
        one = Path(work) / "one.jsonl"  # start-up: the same command on the file's first record
        one.write_bytes(records[0] + b"\n")
        start_s = timed(lambda: subprocess.run([*command[:-3], str(one), *command[-2:]], check=True,
                                               capture_output=True, cwd=work))
    return len(records) / floor_s, len(records) / replay_s, start_s


def alerter_at_scale(rows: SliRows, clients: int = 100_000, minutes: int = 4) -> dict:
    """The alerter (every shipped rule; the faust alerter's core, without its changelog writes) fed ``clients``
    active clients a minute: real per-client rows from the engine, re-keyed to that many clients."""
    rng = np.random.default_rng(0)
    start = int(rows.bucket.min())
    alerter = Alerter(load_rules(default_rules_dir()))
    names = np.array([f"client-{i}" for i in range(clients)], dtype=object)
    fed, elapsed = 0, 0.0
    for minute in range(minutes):
        pick = rng.integers(0, len(rows), clients)
        table = SliRows(np.full(clients, start + 60 * minute, np.int64), rows.model[pick], names,
                        rows.values[pick], rows.first[pick])
        elapsed += timed(lambda t=table, m=minute: (alerter.ingest(t), alerter.advance(start + 60 * (m + 1) + 61)))
        fed += clients
    live = max([e.live_clients for e in alerter.clients] + [1])
    return {"scale_clients": clients, "scale_rows_per_s": fed / elapsed,
            "scale_bytes_per_client": sum(e.memory_bytes for e in alerter.clients) / live}


def run(records: list[bytes], profile: Profile, batch_size: int = 4096) -> dict:
    chunks = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    n = len(records)
    floor_s = floor_of(records)
    parsed: list = []
    parse_s = min(timed(lambda: (parsed.clear(), parsed.extend(parse_batch(c).batch for c in chunks)))
                  for _ in range(3))
    results: list = []
    engines: list[Engine] = []

    def engine_run(with_profile: bool) -> float:
        """One pass of a fresh engine over every batch (its results and itself kept from the last pass)."""
        engines[:] = [Engine(Settings(fingerprint_secret="bench").engine_settings(), profile if with_profile else None)]
        results.clear()
        def every_batch() -> None:
            results.extend(engines[0].process(b) for b in parsed)
            results.append(engines[0].finish())  # the last minutes' queries, matched at the end of input

        return timed(every_batch)

    # alternating, best of three each: this machine's speed drifts by tens of percent within minutes
    runs = [(engine_run(False), engine_run(True)) for _ in range(3)]
    bare_s, engine_s = min(r[0] for r in runs), min(r[1] for r in runs)
    engine = engines[0]
    alerter = Alerter(load_rules(default_rules_dir()))

    def evaluate():
        for result in results:
            alerter.ingest(result.rows, result.flagged, result.edges)
            alerter.advance(result.watermark)

    alert_s = timed(evaluate)
    rules = load_rules(default_rules_dir())
    # one drift rule (confidence-drift: Page-Hinkley, like the river baseline below), with the alerter around it
    drift_only = Alerter(rules.model_copy(update={"slos": (), "no_data": (), "clients": (), "groups": (),
                                                  "drift": rules.drift[:1]}))

    def evaluate_drift():
        for result in results:
            drift_only.ingest(result.rows)
            drift_only.advance(result.watermark)

    drift_s = timed(evaluate_drift)
    confidences = np.concatenate([b.confidence for b in parsed])
    detector = drift.PageHinkley(delta=0.005, threshold=0.2)

    def per_event():
        for value in confidences.tolist():
            detector.update(value)

    river_s = timed(per_event)
    client_slos = [e.windows for e in alerter.slos if e.slo.scope == "client"]
    client_bytes = sum(w.memory_bytes for w in client_slos) + sum(e.memory_bytes for e in alerter.clients)
    clients = max(1, max([w.live_keys for w in client_slos] + [e.live_clients for e in alerter.clients], default=1))
    stored = engine.matcher.stored_queries if engine.matcher is not None else 0
    return {"events": n, "floor_s": floor_s, "parse_s": parse_s, "engine_s": engine_s, "alert_s": alert_s,
            "bare_s": bare_s, "rows": SliRows.concat([r.rows for r in results]),
            "drift_s": drift_s, "slos": len(rules.slos), "tests": len(rules.clients) + len(rules.groups),
            "river_s": river_s, "client_bytes": client_bytes, "clients": clients,
            "fingerprint_bytes": engine.fingerprint_memory_bytes, "fingerprints": max(stored, 1)}


def steady_state(hours: float, batch_size: int = 4096) -> dict:
    """The engine once its query index is full (two generations), as in a service that has run for hours: warmed
    on all but the last hour of ``hours`` of realistic records, then timed on that hour (best of three copies of
    the warmed engine), with and without a profile. A fresh index (``run``) is cheaper to search."""
    made = realistic(hours=hours)
    last = round(len(made.records) / hours)  # the last hour's records
    batches = [parse_batch(made.records[i:i + batch_size]).batch for i in range(0, len(made.records), batch_size)]
    cut = next(i for i in range(len(batches)) if sum(map(len, batches[i:])) <= last)
    out: dict = {"steady_hours": hours, "steady_events": sum(map(len, batches[cut:]))}
    for name, profile in (("steady_bare_s", None), ("steady_s", made.profile)):
        warmed = Engine(Settings(fingerprint_secret="bench").engine_settings(), profile)
        for batch in batches[:cut]:
            warmed.process(batch)
        out["steady_stored"] = warmed.matcher.stored_queries if warmed.matcher is not None else 0

        def timed_hour(engine: Engine) -> float:
            return timed(lambda: [engine.process(b) for b in batches[cut:]])

        out[name] = min(timed_hour(copy.deepcopy(warmed)) for _ in range(3))
    return out


def matcher_rate(records: list[bytes], batch_size: int = 4096) -> dict:
    """``advmon matcher``'s work without Kafka: the records' match-requests (from ingest with remote matching)
    decoded, held and matched minute by minute; queries a second, best of two."""
    engine = Engine(Settings(fingerprint_secret="bench", remote_matching=True).engine_settings())
    wire = []
    for start in range(0, len(records), batch_size):
        result = engine.process(parse_batch(records[start:start + batch_size]).batch)
        wire += [c.encode() for c in MatchRequestBatch("ingest-0", result.watermark, result.match_groups).chunks()]
    queries = sum(len(g) for raw in wire for g in MatchRequestBatch.decode(raw).groups)

    def match_all() -> OrderedMatcher:
        matcher = OrderedMatcher(MatcherSettings())
        for offset, raw in enumerate(wire):
            matcher.add(MatchRequestBatch.decode(raw), now=0.0, offset=offset)
            matcher.advance(now=0.0)
        return matcher

    seconds = min(timed(match_all) for _ in range(2))
    checkpoint = match_all().checkpoint

    def rebuild() -> None:  # a restart: the requests from replay_from decoded again and matched up to the seal
        start = max(checkpoint.replay_from, 0)
        requests = [(o, MatchRequestBatch.decode(raw), 0.0) for o, raw in enumerate(wire) if o >= start]
        OrderedMatcher.restored(MatcherSettings(), checkpoint, requests)

    rebuilt = sum(len(g) for raw in wire[max(checkpoint.replay_from, 0):] for g in MatchRequestBatch.decode(raw).groups)
    return {"matcher_rate": queries / seconds, "matcher_bytes": sum(map(len, wire)) / max(queries, 1),
            "rebuild_rate": rebuilt / min(timed(rebuild) for _ in range(2)), "rebuilt": rebuilt}


def report(r: dict, what: str) -> str:
    n = r["events"]
    lines = [
        f"{n:,} {what}, batches of 4,096",
        f"{'orjson.loads per record (the floor)':44} {n / r['floor_s']:12,.0f} records/s",
        f"{'parse + validate (msgspec, columnar)':44} {n / r['parse_s']:12,.0f} records/s   "
        f"({r['floor_s'] / r['parse_s']:.2f}x the floor; cost {r['parse_s'] / r['floor_s']:.2f}x orjson)",
        f"{'engine without a profile (fingerprints, SLIs)':44} {n / r['bare_s']:12,.0f} events/s    "
        f"(engine / parse = {r['bare_s'] / r['parse_s']:.2f})",
        f"{'engine with a profile (+ profile scores)':44} {n / r['engine_s']:12,.0f} events/s    "
        f"(engine / parse = {r['engine_s'] / r['parse_s']:.2f})",
        f"{'one drift rule (river on minute aggregates)':44} {r['drift_s'] / n * 1e6:12.3f} us/event  "
        f"(river PageHinkley.update on every event: {r['river_s'] / n * 1e6:.3f} us/event, "
        f"{r['river_s'] / max(r['drift_s'], 1e-9):.1f}x ours)",
        f"{'all rules (' + str(r['slos']) + ' SLOs, ' + str(r['tests']) + ' client/group tests, drift...)':44} "
        f"{r['alert_s'] / n * 1e6:12.3f} us/event",
        f"{'memory per tracked client (client tests)':44} {r['client_bytes'] / r['clients']:12,.0f} bytes "
        f"({r['clients']} clients)",
        f"{'memory per million fingerprinted queries':44} {r['fingerprint_bytes'] / r['fingerprints']:12,.0f} MB "
        f"({r['fingerprints']:,} queries stored)",
    ]
    if "steady_s" in r:
        for key, name in (("steady_bare_s", "engine without a profile, steady state"),
                          ("steady_s", "engine with a profile, steady state")):
            lines.append(f"{name:44} {r['steady_events'] / r[key]:12,.0f} events/s    (hour {r['steady_hours']:g} "
                         f"of realistic records, {r['steady_stored']:,} queries indexed before it; engine / parse = "
                         f"{r[key] / r['steady_events'] / (r['parse_s'] / n):.2f})")
    lines.append(f"{'advmon matcher (match-requests in, decoded)':44} {r['matcher_rate']:12,.0f} queries/s   "
                 f"({r['matcher_bytes']:.0f} bytes a query on the wire)")
    lines.append(f"{'advmon matcher restarted (rebuild from its log)':44} {r['rebuild_rate']:12,.0f} queries/s   "
                 f"({r['rebuilt']:,} queries read again)")
    need = r["scale_clients"] / 60.0  # rows/s of one row per active client a minute, in real time
    lines.append(f"{'alerter, ' + format(r['scale_clients'], ',') + ' active clients a minute':44} "
                 f"{r['scale_rows_per_s']:12,.0f} rows/s      ({r['scale_rows_per_s'] / need:.1f}x real time; "
                 f"{r['scale_bytes_per_client']:,.0f} bytes per active client in the client tests)")
    if "replay_rate" in r:
        lines.append(f"{'advmon replay FILE --profile (fresh process)':44} {r['replay_rate']:12,.0f} events/s    "
                     f"({r['replay_rate'] / r['file_floor']:.3f}x the floor on the file, {r['file_floor']:,.0f}/s; "
                     f"start-up {r['start_s']:.2f} s of it)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", choices=("realistic", "demo"), default="realistic")
    parser.add_argument("--hours", type=float, default=1.0, help="realistic records: hours at 10 events/s")
    parser.add_argument("--duration", default="3h", help="demo records: event time to generate")
    parser.add_argument("--no-replay", action="store_true", help="skip the advmon replay subprocess")
    parser.add_argument("--steady-hours", type=float, default=4.0,
                        help="time the engine on the last hour of this many hours of realistic records (0: skip)")
    args = parser.parse_args()
    records, profile, what = (realistic_records(args.hours) if args.records == "realistic"
                              else demo_records(args.duration))
    result = run(records, profile)
    result.update(alerter_at_scale(result.pop("rows")))
    result.update(matcher_rate(records))
    if args.steady_hours:
        result.update(steady_state(args.steady_hours))
    if not args.no_replay:
        result["file_floor"], result["replay_rate"], result["start_s"] = replay_rates(records, profile)
    print(report(result, what))
    return 0


if __name__ == "__main__":
    sys.exit(main())
