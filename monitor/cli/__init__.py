"""The ``advmon`` command line: one module per command group, each declaring its options next to its handler.

Only this package turns errors into exit codes: an :class:`~monitor.errors.AdvmonError` becomes one line on
stderr and its ``exit_code``; anything else is a bug and keeps its traceback.

>>> main(["rules", "check", "/no/such/dir"])
2
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.cli import demo, kafka, profile, replay, rules, schema
from monitor.errors import AdvmonError, RulesError

COMMAND_GROUPS = (demo, replay, profile, rules, schema, kafka)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advmon", description="Watch ML inference traffic for adversarial attacks.")
    parser.add_argument("--version", action="version", version=f"advmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "faust", "mode"):  # client chatter; their warnings still show
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except RulesError as exc:
        print(f"advmon: invalid rules:\n{exc}", file=sys.stderr)
        return exc.exit_code
    except AdvmonError as exc:
        print(f"advmon {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("advmon: interrupted", file=sys.stderr)
        return 130
