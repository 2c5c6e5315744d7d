"""In-process figures: engine events/s beside the plain orjson parse of the same records (the floor),
the per-event cost of our SLI + drift updates beside calling river's detector per event, and the
memory per tracked client and per stored fingerprint.

    python3 bench/engine.py [--duration 3h]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.alerting.alerter import Alerter  # noqa: E402
from monitor.detect.engine import Engine  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from monitor.sim.synth import Scenario  # noqa: E402
from monitor.spec.rules import default_rules_dir, load_rules, parse_duration  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(duration: str, batch_size: int = 4096) -> dict:
    scenario = Scenario.build(seed=0, duration_s=parse_duration(duration))
    profile = scenario.reference_profile()
    records = [r for chunk in scenario.chunks() for r in chunk.records]
    chunks = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    n = len(records)

    def plain():
        for record in records:
            try:
                orjson.loads(record)
            except orjson.JSONDecodeError:
                pass

    floor_s = timed(plain)
    parsed = []
    parse_s = timed(lambda: parsed.extend(parse_batch(c).batch for c in chunks))
    engine = Engine(Settings(fingerprint_secret="bench").engine_settings(), profile)
    results = []
    engine_s = timed(lambda: results.extend(engine.process(b) for b in parsed))
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
    from river import drift

    detector = drift.PageHinkley(delta=0.005, threshold=0.2)

    def per_event():
        for value in confidences.tolist():
            detector.update(value)

    river_s = timed(per_event)
    client_slos = [e.windows for e in alerter.slos if e.slo.scope == "client"]
    client_bytes = sum(w.memory_bytes for w in client_slos) + sum(e.memory_bytes for e in alerter.clients)
    clients = max(1, max([w.live_keys for w in client_slos] + [e.live_clients for e in alerter.clients], default=1))
    stored = sum(index.stored_queries for index in engine._indexes.values())
    return {"events": n, "floor_s": floor_s, "parse_s": parse_s, "engine_s": engine_s, "alert_s": alert_s,
            "drift_s": drift_s, "slos": len(rules.slos), "tests": len(rules.clients) + len(rules.groups),
            "river_s": river_s, "client_bytes": client_bytes, "clients": clients,
            "fingerprint_bytes": engine.fingerprint_memory_bytes, "fingerprints": max(stored, 1)}


def report(r: dict) -> str:
    n = r["events"]
    lines = [
        f"{n:,} demo records (2 models; raw features, embeddings and logits), batches of 4,096",
        f"{'orjson.loads per record (the floor)':44} {n / r['floor_s']:12,.0f} records/s",
        f"{'parse + validate (pydantic, columnar)':44} {n / r['parse_s']:12,.0f} records/s   "
        f"({r['floor_s'] / r['parse_s']:.2f}x the floor)",
        f"{'engine (fingerprints, profile scores, SLIs)':44} {n / r['engine_s']:12,.0f} events/s    "
        f"(engine / parse = {r['engine_s'] / r['parse_s']:.2f})",
        f"{'one drift rule (river on minute aggregates)':44} {r['drift_s'] / n * 1e6:12.3f} us/event  "
        f"(river PageHinkley.update on every event: {r['river_s'] / n * 1e6:.3f} us/event, "
        f"{r['river_s'] / max(r['drift_s'], 1e-9):.1f}x ours)",
        f"{'all rules (' + str(r['slos']) + ' SLOs, ' + str(r['tests']) + ' client/group tests, drift...)':44} "
        f"{r['alert_s'] / n * 1e6:12.3f} us/event",
        f"{'memory per tracked client (client tests)':44} {r['client_bytes'] / r['clients']:12,.0f} bytes "
        f"({r['clients']} clients)",
        f"{'memory per stored fingerprint':44} {r['fingerprint_bytes'] / r['fingerprints']:12,.0f} bytes "
        f"({r['fingerprints']:,} queries stored)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", default="3h")
    args = parser.parse_args()
    print(report(run(args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
