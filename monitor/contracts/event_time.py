"""Event time as the workers' messages report it: each input partition's watermark on the wire, and the sources
a reader of several workers' messages (the alerter, the matcher) must wait for.

Partitions are sources of their own because they change hands: the worker that takes one over holds it where
the one that lost it had got to. A message also names its input topic and partition count, so that a partition
no worker has reported yet holds too, from the first message that names it (at -inf) until it is reported or
has been quiet for the reader's idle time.

>>> reported_sources("ingest-0", 120.0, {"logs/0": 120.0}, ("logs", 2), known={"ingest-0"})
[('ingest-0', 120.0), ('logs/0', 120.0), ('logs/1', -inf)]
>>> marks_from_wire(marks_to_wire({"logs/0": 61.5, "logs/1": float("-inf")}))
{'logs/0': 61.5, 'logs/1': -inf}
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping


def reported_sources(instance: str, watermark: float, partitions: Mapping[str, float], inputs: tuple[str, int],
                     known: Container[str]) -> list[tuple[str, float]]:
    """Every source one message speaks for, with its watermark: the worker that sent it, each input partition it
    reports, and each partition of its input topic (``inputs``: topic, count) that is not ``known`` yet."""
    topic, count = inputs
    names = (f"{topic}/{i}" for i in range(count))
    unheard = [(name, -math.inf) for name in names if name not in known and name not in partitions]
    return [(instance, watermark), *partitions.items(), *unheard]


def marks_to_wire(marks: Mapping[str, float]) -> dict[str, float | None]:
    """Watermarks as JSON: null for -inf (nothing read yet)."""
    return {name: mark if math.isfinite(mark) else None for name, mark in marks.items()}


def marks_from_wire(raw: Mapping[str, float | None]) -> dict[str, float]:
    return {str(name): -math.inf if mark is None else float(mark) for name, mark in raw.items()}
