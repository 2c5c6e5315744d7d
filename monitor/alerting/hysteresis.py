"""Hysteresis of the evaluators that page keys (clients, groups): an open alert resolves once its key has not
been hot for ``resolve_after``.

>>> open_alerts, last_hot = {"a": "alert a", "b": "alert b"}, {"a": 0.0, "b": 500.0}
>>> cooled(open_alerts, last_hot, hot=set(), now=900.0, hold=900.0)
[('a', 'alert a')]
>>> open_alerts, last_hot
({'b': 'alert b'}, {'b': 500.0})
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")


def cooled(open_alerts: dict[K, A], last_hot: dict[K, float], hot: set[K], now: float,
           hold: float) -> list[tuple[K, A]]:
    """Remove and return the open alerts whose key is not hot now and has not been for ``hold`` seconds; their
    ``last_hot`` entries go with them, so keys that once stood out are not remembered for ever."""
    done = [(key, alert) for key, alert in open_alerts.items() if key not in hot and now - last_hot[key] >= hold]
    for key, _ in done:
        del open_alerts[key], last_hot[key]
    return done
