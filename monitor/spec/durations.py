"""Durations in rules and on the command line: ``"90s"``, ``"5m"``, ``"1h30m"``, ``"30d"`` or seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> int:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"30d"`` or a number of seconds -> seconds.

    >>> parse_duration("1h30m"), parse_duration("30d"), parse_duration(60)
    (5400, 2592000, 60)
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration like '5m' or '1h'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and re.fullmatch(r"(\d+[smhdw])+", value.strip()):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value))
    else:
        raise ValueError(f"must be a duration like '5m', '1h' or '30d', got {value!r}")
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


Duration = Annotated[int, BeforeValidator(parse_duration)]


def parse_wait(value: Any) -> int:
    """A duration that may be zero (``"0s"``, ``0``): no wait.

    >>> parse_wait("0s"), parse_wait(0), parse_wait("30s")
    (0, 0, 30)
    """
    return 0 if value in (0, "0", "0s") else parse_duration(value)


WaitDuration = Annotated[int, BeforeValidator(parse_wait)]


def format_duration(seconds: int) -> str:
    """The largest whole unit: 3600 -> ``"1h"``, 5400 -> ``"90m"``."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
