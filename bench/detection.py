"""Detection on scenario families this project's demo did not generate (monitor/sim/families.py): per family,
false pages and benign tickets per 24 h, time and queries to detect every attack, and per-event AUROC and
TPR of every detector signal; all through `advmon replay`'s in-process runtime with the shipped rules.

    python3 bench/detection.py                       # every family, 24 h each (about 25 minutes on 2 cores)
    python3 bench/detection.py --families digits-train-ref --hours 6
    python3 bench/detection.py --draws 5             # and each family again with 4 other draws of its reference fit

Generated days are cached in bench/.cache (keyed by the family's definition).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.sim.evaluation import (  # noqa: E402
    DayReport,
    Replayed,
    SignalQuality,
    reference_profile,
    replay,
    score_alerts,
    signal_quality,
)
from monitor.sim.families import DAY_START, FAMILIES, Day, Family, generate  # noqa: E402
from monitor.spec.rules import default_rules_dir, load_rules  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 3  # bump when monitor/sim changes what a family generates (3: ART attacks seeded)


def load_day(family: Family, cache: Path) -> Day:
    key = hashlib.sha256(f"{GENERATOR_VERSION}/{family!r}".encode()).hexdigest()[:16]
    path = cache / f"{family.name}-{key}.pickle"
    if path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    day = generate(family)
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(day, handle)
    return day


SIGNALS = {  # name -> (per-event value, higher = more suspicious; the signal's own decision)
    "score_ratio": (lambda s: s["score_ratio"], lambda s: s["score_ratio"] > 1.0),
    "low_margin_rank": (lambda s: 1.0 - s["margin_rank"], lambda s: s["margin_rank"] < 0.01),
    "near_duplicate": (lambda s: s["near_duplicate"], lambda s: s["near_duplicate"] > 0),
    "own_near_duplicate": (lambda s: s["own_near_duplicate"], lambda s: s["own_near_duplicate"] > 0),
    "private_near_dup": (lambda s: s["own_near_duplicate"] * (1 - s["cross_near_duplicate"]),
                         lambda s: (s["own_near_duplicate"] > 0) & (s["cross_near_duplicate"] == 0)),
    "low_confidence": (lambda s: 1.0 - s["confidence"], lambda s: s["confidence"] < 0.5),
}


def report(day: Day, replayed: Replayed) -> tuple[DayReport, dict[str, dict[str, SignalQuality]]]:
    keys = day.attack_keys()
    owner = np.array([keys.get(c, "") for c in replayed.client_id.tolist()], dtype=object)
    query_times = {name: replayed.ts[owner == name] for name in day.truth}
    change = day.family.change
    result = score_alerts(replayed.alerts, day.truth, query_times, day.family.hours,
                          DAY_START + change.start_h * 3600 if change.start_h < day.family.hours else None)
    benign = owner == ""
    quality = {name: {signal: signal_quality(value(replayed.signals), decide(replayed.signals), owner == name, benign)
                      for signal, (value, decide) in SIGNALS.items()} for name in day.truth}
    return result, quality


def render(family: Family, day: Day, result: DayReport, quality: dict, replayed: Replayed) -> list[str]:
    lines = [f"{family.name}: {family.data}, reference: {family.reference}, {len(day.records):,} events over "
             f"{family.hours:g} h, {family.clients} clients; replay {replayed.seconds:.0f} s",
             f"  false pages per 24 h: {result.false_pages_per_day:.1f}"
             + (f" ({', '.join(f'{r} x{n}' for r, n in sorted(result.false_page_rules.items()))})"
                if result.false_pages else ""),
             f"  benign tickets per 24 h: {result.false_tickets_per_day:.1f}"
             + (f" ({', '.join(f'{r} x{n}' for r, n in sorted(result.false_ticket_rules.items()))})"
                if result.false_tickets else ""),
             f"  population-wide change ({family.change.kind} from {family.change.start_h:g} h): "
             + ("no ticket" if result.change_ticket_delay_s is None else
                f"first ticket {result.change_ticket_delay_s / 60:.0f} min after it began"),
             f"  {'attack':22} {'keys':>4} {'queries':>7} {'success':>7} {'paged after':>12} {'queries':>8}  by",
             ]
    for name, detection in result.detections.items():
        truth = day.truth[name]
        delay = "never" if detection.delay_s is None else f"{detection.delay_s:.0f} s"
        lines.append(f"  {name:22} {len(truth['keys']):4} {truth['queries']:7} {truth['succeeded']:7.0%} "
                     f"{delay:>12} {detection.queries if detection.queries is not None else '-':>8}  {detection.by}")
    signals = list(SIGNALS)
    lines.append("  per-event AUROC (TPR at the signal's threshold) vs benign; benign FPR: "
                 + ", ".join(f"{s} {next(iter(quality.values()))[s].fpr:.2%}" for s in signals))
    lines.append(f"  {'attack':22} " + " ".join(f"{s:>22}" for s in signals))
    for name, row in quality.items():
        lines.append(f"  {name:22} " + " ".join(f"{row[s].auroc:14.3f} ({row[s].tpr:4.0%})" for s in signals))
    return lines


def render_draws(reports: list[DayReport]) -> list[str]:
    """The same family with each draw of its reference profile (the fit/calibration split and the kNN sample of one
    reference): how much its figures owe to the draw. Draw 0 is the table above."""
    def delay(d) -> str:
        return "never" if d.delay_s is None else f"{d.delay_s:.0f}"

    def change(r: DayReport) -> str:
        return "none" if r.change_ticket_delay_s is None else f"{r.change_ticket_delay_s / 60:.0f}"

    lines = [f"  with {len(reports)} draws of the reference fit (draw 0 first; seconds to page, minutes to the "
             "change's ticket):",
             "    false pages per 24 h   " + " ".join(f"{r.false_pages_per_day:>6.1f}" for r in reports),
             "    benign tickets per 24 h" + " ".join(f"{r.false_tickets_per_day:>6.1f}" for r in reports),
             "    population-wide change " + " ".join(f"{change(r):>6}" for r in reports)]
    for name in reports[0].detections:
        lines.append(f"    {name:23}" + " ".join(f"{delay(r.detections[name]):>6}" for r in reports))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--hours", type=float, default=24.0, help="event time per family (default 24)")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--rules", default=str(default_rules_dir()), help="rules directory (default: the shipped)")
    parser.add_argument("--dump", help="also write each family's per-event signals to DIR/<family>.npz")
    parser.add_argument("--draws", type=int, default=1,
                        help="replay each family with this many draws of its reference fit (default 1: the table)")
    args = parser.parse_args()
    started = time.perf_counter()
    for name in args.families.split(","):
        family = FAMILIES[name].scaled(hours=args.hours)
        family = family.scaled(attacks=tuple(a for a in family.attacks if a.start_h < args.hours - 0.5))
        day = load_day(family, Path(args.cache))
        replayed = replay(day, reference_profile(day), load_rules(Path(args.rules)))
        result, quality = report(day, replayed)
        if args.dump:
            keys = day.attack_keys()
            np.savez(Path(args.dump) / f"{name}.npz", client=replayed.client_id.astype(str), ts=replayed.ts,
                     attack=np.array([keys.get(c, "") for c in replayed.client_id.tolist()]),
                     **{k: np.asarray(v).astype(str) if v.dtype == object else v for k, v in replayed.signals.items()})
            with open(Path(args.dump) / f"{name}.alerts.jsonl", "wb") as out:
                out.writelines(a.to_json() + b"\n" for a in replayed.alerts)
        print("\n".join(render(family, day, result, quality, replayed)), flush=True)
        if args.draws > 1:
            rules = load_rules(Path(args.rules))
            reports = [result] + [report(day, replay(day, reference_profile(day, draw=draw), rules))[0]
                                  for draw in range(1, args.draws)]
            print("\n".join(render_draws(reports)), flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
