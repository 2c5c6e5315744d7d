"""``advmon schema events``: the inference event contract as JSON Schema, for producers to validate against."""

from __future__ import annotations

import argparse
import sys

import orjson


def register(commands: argparse._SubParsersAction) -> None:
    schema = commands.add_parser("schema", help="print a contract as JSON Schema")
    schema.add_argument("contract", choices=("events",), help="events: a record of the inference-logs topic")
    schema.set_defaults(func=run_schema)


def run_schema(args: argparse.Namespace) -> int:
    from monitor.contracts.events import event_json_schema

    sys.stdout.write(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
