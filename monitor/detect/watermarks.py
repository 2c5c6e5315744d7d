"""Event-time watermark over several input partitions: the slowest partition that still has data.

A consumer that reads partitions at different speeds must not let the fastest one close windows
that the others still feed. A partition counts while it has unread records (its backlog) or sent
data within ``idle_s`` of wall time; a partition that is caught up and quiet stops holding the
watermark back. One with a backlog but nothing read yet holds it at -inf.

>>> w = PartitionWatermarks(idle_s=60)
>>> w.observe({"p0": 100.0, "p1": 40.0}, now=0.0)
>>> w.watermark(backlog={"p0": 0, "p1": 0}, now=1.0)
40.0
>>> w.observe({"p0": 150.0, "p1": 150.0}, now=2.0)
>>> w.watermark(backlog={"p0": 0, "p1": 0, "p2": 500}, now=2.0)   # p2 has unread records: held, never goes back
40.0
>>> w.observe({"p0": 200.0, "p2": 90.0}, now=130.0); w.watermark(backlog={"p0": 0, "p1": 0, "p2": 0}, now=130.0)
90.0
>>> w.watermark(backlog={"p0": 0, "p1": 0, "p2": 0}, now=300.0)   # all caught up and quiet: keep the last value
90.0
"""

from __future__ import annotations

from collections.abc import Mapping


class PartitionWatermarks:
    def __init__(self, idle_s: float = 120.0) -> None:
        self.idle_s = idle_s
        self._max_ts: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._last = float("-inf")

    def observe(self, max_ts: Mapping[str, float], now: float) -> None:
        """The largest event time read from each partition in a batch."""
        for partition, ts in max_ts.items():
            self._max_ts[partition] = max(ts, self._max_ts.get(partition, float("-inf")))
            self._seen[partition] = now

    def watermark(self, backlog: Mapping[str, int], now: float) -> float:
        """Never goes back; ``backlog`` gives the unread records of each assigned partition."""
        holding = self.holding(backlog, now)
        if holding:
            self._last = max(self._last, min(holding.values()))
        return self._last

    def holding(self, backlog: Mapping[str, int], now: float) -> dict[str, float]:
        """The partitions that hold the watermark (unread records, or data within ``idle_s``), each with its
        largest event time read (-inf: none yet). Reported downstream, they let a reader of several workers'
        outputs take the slowest partition, wherever it is read now: a partition handed to another worker keeps
        its place there, where the worker that lost it would report a watermark without it.

        >>> w = PartitionWatermarks(idle_s=60); w.observe({"p0": 100.0}, now=0.0)
        >>> w.holding({"p0": 0, "p1": 7, "p2": 0}, now=1.0)
        {'p0': 100.0, 'p1': -inf}
        """
        holding = {}
        for partition, unread in backlog.items():
            recent = now - self._seen.get(partition, float("-inf")) <= self.idle_s
            if unread > 0 or recent:
                holding[partition] = self._max_ts.get(partition, float("-inf"))
        return holding

    def forget(self, partitions) -> None:
        """Partitions revoked from this consumer no longer hold its watermark."""
        for partition in partitions:
            self._max_ts.pop(partition, None)
            self._seen.pop(partition, None)
