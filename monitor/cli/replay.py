"""``advmon replay``: a JSON Lines file of events through the in-process runtime, in event time."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import existing_file, rules_of, setting_option, settings_of


def register(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="process a JSON Lines file of events in event time")
    replay.add_argument("events")
    setting_option(replay, "--rules", dest="rules_dir", help="rules directory (default: the shipped rules)")
    setting_option(replay, "--profile", dest="profile_path",
                   help="reference profile from `advmon profile fit` (enables input anomaly scores)")
    replay.add_argument("--alerts-out", help="write alerts as JSON Lines (the alert contract)")
    replay.add_argument("--suspicious-out", help="write every flagged event with its scores, their ratios to "
                                                 "their thresholds and the reason, as JSON Lines")
    replay.add_argument("--dlq-out", default="dead-letters.jsonl",
                        help="write rejected lines with their reason (default dead-letters.jsonl, only if any)")
    setting_option(replay, "--batch-size", dest="batch_size", type=int, help="records per batch (default 4096)")
    replay.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.runtime.replay import replay

    settings = settings_of(args)
    summary = replay(existing_file(args.events), settings=settings, rules=rules_of(settings),
                     profile_path=settings.profile_path, alerts_out=args.alerts_out, dlq_out=args.dlq_out,
                     batch_size=settings.batch_size, suspicious_out=args.suspicious_out)
    print(summary, file=sys.stderr)
    return 0
