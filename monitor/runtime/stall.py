"""How long a condition has lasted (a daemon's consumer-group rebalance), and when it is due to be reported again.

Time is a parameter: the daemon passes its monotonic clock.

>>> watch = StallWatch(report_after_s=60.0, every_s=60.0)
>>> watch.start(0.0)
>>> watch.seconds(30.0), watch.due(30.0), watch.due(61.0), watch.due(90.0), watch.due(121.5)
(30.0, False, True, False, True)
>>> watch.start(100.0)  # still the same stretch: it started at 0
>>> watch.seconds(130.0)
130.0
>>> watch.end()
>>> watch.seconds(200.0), watch.due(200.0)
(0.0, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class StallWatch:
    """``start`` and ``end`` bracket a stretch; ``due`` says when it has lasted ``report_after_s`` and then once
    every ``every_s``."""

    report_after_s: float
    every_s: float = 60.0
    _since: float | None = None
    _reported: float = -math.inf

    def start(self, now: float) -> None:
        if self._since is None:
            self._since, self._reported = now, -math.inf

    def end(self) -> None:
        self._since = None

    def seconds(self, now: float) -> float:
        """How long the current stretch has lasted; 0 outside one."""
        return 0.0 if self._since is None else now - self._since

    def due(self, now: float) -> bool:
        if self._since is None or now - self._since < self.report_after_s or now - self._reported < self.every_s:
            return False
        self._reported = now
        return True
