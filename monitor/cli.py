"""The ``advmon`` command line: demo, replay, profile fit, rules check."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from monitor.rules import Rules, RulesError, default_rules_dir, load_rules

log = logging.getLogger("advmon")


def _load_rules(directory: str | None) -> Rules:
    path = Path(directory) if directory else default_rules_dir()
    return load_rules(path)


def _serve_metrics(port: int, registry) -> None:
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise SystemExit(f"advmon: cannot serve /metrics on 127.0.0.1:{port}: {exc} (use --metrics-port 0 to disable)")
    print(f"advmon: serving Prometheus metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from monitor.demo import run_demo
    from monitor.rules import parse_duration

    settings = Settings()
    return run_demo(
        settings=settings, rules=_load_rules(args.rules), duration_s=parse_duration(args.duration), seed=args.seed,
        forever=args.forever, speed=args.speed, metrics_port=settings.metrics_port if args.metrics_port is None
        else args.metrics_port, serve_metrics=_serve_metrics, events_out=args.events_out,
        profile_out=args.profile_out, alerts_out=args.alerts_out, progress=not args.no_progress,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from monitor.replay import replay

    if not Path(args.events).is_file():
        raise SystemExit(f"advmon replay: {args.events}: no such file")
    settings = Settings()
    summary = replay(
        args.events, settings=settings, rules=_load_rules(args.rules), profile_path=args.profile,
        alerts_out=args.alerts_out, dlq_out=args.dlq_out, batch_size=args.batch_size or settings.batch_size,
    )
    print(summary, file=sys.stderr)
    return 0


def cmd_profile_fit(args: argparse.Namespace) -> int:
    from monitor.profile_fit import fit_profile_file

    profile = fit_profile_file(args.reference, fpr=args.fpr, k=args.k)
    profile.save(args.output)
    for key, model in sorted(profile.models.items()):
        print(f"{key}: dim {model.dim}, {model.means.shape[0]} classes, thresholds "
              + ", ".join(f"{n}={t:.4g}" for n, t in zip(("mahalanobis", "knn", "energy"), model.thresholds)),
              file=sys.stderr)
    print(f"advmon: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    rules = load_rules(args.directory)
    for slo in rules.slos:
        tiers = ", ".join(f"{t.severity} {t.names[0]}/{t.names[1]} x{t.factor:.3g}" for t in slo.tiers)
        print(f"slo {slo.name}: {slo.sli} per {slo.scope}, objective {slo.objective}: {tiers}")
    for rule in rules.drift:
        print(f"drift {rule.name}: {rule.detector} on {rule.series} -> {rule.severity}")
    print(f"ok: {len(rules.slos)} SLOs, {len(rules.drift)} drift rules, {len(rules.routes)} routes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advmon", description="Watch ML inference traffic for adversarial attacks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="synthetic traffic with attacks, in-process; prints alerts, serves /metrics")
    demo.add_argument("--duration", default="3h", help="event time to simulate per cycle (default 3h)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--forever", action="store_true", help="repeat the scenario until interrupted")
    demo.add_argument("--speed", type=float, default=None,
                      help="event-time seconds per wall second (default: as fast as possible; 60 with --forever)")
    demo.add_argument("--metrics-port", type=int, default=None, help="0 disables (default ADVMON_METRICS_PORT or 9310)")
    demo.add_argument("--rules", help="rules directory (default: the shipped rules/)")
    demo.add_argument("--events-out", help="also write the generated events as JSON Lines (input for replay)")
    demo.add_argument("--profile-out", help="also write the reference profile the demo fitted")
    demo.add_argument("--alerts-out", help="also write alerts as JSON Lines")
    demo.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    demo.set_defaults(func=cmd_demo)

    replay = commands.add_parser("replay", help="process a JSON Lines file of events in event time")
    replay.add_argument("events")
    replay.add_argument("--rules", help="rules directory (default: the shipped rules/)")
    replay.add_argument("--profile", help="reference profile from `advmon profile fit` (enables input anomaly scores)")
    replay.add_argument("--alerts-out", help="write alerts as JSON Lines (the alert contract)")
    replay.add_argument("--dlq-out", default="dead-letters.jsonl",
                        help="write rejected lines with their reason (default dead-letters.jsonl, only if any)")
    replay.add_argument("--batch-size", type=int, default=None)
    replay.set_defaults(func=cmd_replay)

    profile = commands.add_parser("profile", help="scorer reference statistics")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    fit = profile_commands.add_parser("fit", help="fit reference statistics from clean traffic")
    fit.add_argument("reference", help="JSON Lines of clean inference events")
    fit.add_argument("-o", "--output", required=True)
    fit.add_argument("--fpr", type=float, default=0.002, help="benign false-positive rate to calibrate at")
    fit.add_argument("--k", type=int, default=50, help="neighbour rank of the kNN score")
    fit.set_defaults(func=cmd_profile_fit)

    rules = commands.add_parser("rules", help="SLO and alert rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser("check", help="validate a rules directory and show the derived tiers")
    check.add_argument("directory")
    check.set_defaults(func=cmd_rules_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RulesError as exc:
        print(f"advmon: invalid rules:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advmon: interrupted", file=sys.stderr)
        return 130
