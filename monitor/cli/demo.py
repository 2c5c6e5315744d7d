"""``advmon demo``: the synthetic scenario with attacks, in-process; prints alerts, serves /metrics."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import rules_of, serve_metrics, setting_option, settings_of


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="synthetic traffic with attacks, in-process; prints alerts, serves /metrics"
    )
    demo.add_argument("--duration", default="3h", help="event time to simulate per cycle (default 3h)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--forever", action="store_true", help="repeat the scenario until interrupted")
    demo.add_argument("--speed", type=float, default=None,
                      help="event-time seconds per wall second (default: as fast as possible; 60 with --forever)")
    setting_option(demo, "--metrics-port", dest="metrics_port", type=int,
                   help="0 disables (default ADVMON_METRICS_PORT or 9310)")
    setting_option(demo, "--rules", dest="rules_dir", help="rules directory (default: the shipped rules)")
    demo.add_argument("--events-out", help="also write the generated events as JSON Lines (input for replay)")
    demo.add_argument("--profile-out", help="also write the reference profile the demo fitted")
    demo.add_argument("--alerts-out", help="also write alerts as JSON Lines")
    demo.add_argument("--no-progress", action="store_true",
                      help="no progress line on stderr (there is none when stderr is not a terminal)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.runtime.demo import run_demo
    from monitor.spec.durations import parse_duration

    settings = settings_of(args)
    return run_demo(
        settings=settings, rules=rules_of(settings), duration_s=parse_duration(args.duration), seed=args.seed,
        forever=args.forever, speed=args.speed,
        serve=lambda registry: serve_metrics(settings.metrics_port, settings.http_host, registry),
        events_out=args.events_out, profile_out=args.profile_out, alerts_out=args.alerts_out,
        progress=not args.no_progress and sys.stderr.isatty(),  # a progress line is for a person at a terminal
    )
