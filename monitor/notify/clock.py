"""The event-time clock that notification groups wait on: the sources' watermark while they report,
and the wall clock's advance from the last watermark once every source has gone quiet (otherwise a
group waiting ``group_wait`` when traffic stops would never go out)."""

from __future__ import annotations


class FlushClock:
    """``now(watermark, wall)``: the time to flush groups at; never goes backwards.

    >>> clock = FlushClock()
    >>> clock.now(float("-inf"), wall=1000.0) is None   # nothing heard yet: no time to flush at
    True
    >>> clock.now(500.0, wall=1000.0)                   # sources report: their watermark
    500.0
    >>> clock.now(float("-inf"), wall=1045.0)           # all quiet: the wall clock's advance since
    545.0
    >>> clock.now(520.0, wall=1050.0)                   # a late report does not turn time back
    545.0
    >>> clock.now(530.0, wall=1060.0)                   # while sources report, only they move it
    545.0
    """

    def __init__(self) -> None:
        self._mark: float | None = None
        self._wall = 0.0

    def now(self, watermark: float, wall: float) -> float | None:
        """Event time at wall-clock time ``wall``, given the sources' watermark (``-inf``: none active)."""
        if watermark > float("-inf"):
            self._mark = watermark if self._mark is None else max(watermark, self._mark)
        elif self._mark is not None:
            self._mark += max(0.0, wall - self._wall)
        self._wall = wall
        return self._mark
