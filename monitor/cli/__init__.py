"""The ``advmon`` command line: one module per command group, each declaring its options next to its handler.

Only this package turns errors into exit codes: an :class:`~monitor.errors.AdvmonError` becomes one line on
stderr and its ``exit_code``; anything else is a bug and keeps its traceback.

>>> main(["rules", "check", "/no/such/dir"])
2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.cli import demo, kafka, profile, replay, rules, schema
from monitor.cli.logs import configure_logging
from monitor.errors import AdvmonError, ConfigError, RulesError
from monitor.settings import Settings

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
    level, fmt = _log_options()
    configure_logging("DEBUG" if args.verbose else level, fmt)
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


def _log_options() -> tuple[str, str]:
    """``ADVMON_LOG_LEVEL`` and ``ADVMON_LOG_FORMAT``; defaults when a variable is invalid (the command
    reports it when it loads its settings)."""
    try:
        settings = Settings.load()
    except ConfigError:
        return "INFO", "text"
    return settings.log_level, settings.log_format
