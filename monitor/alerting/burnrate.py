"""Event-time ring buffers of (bad, total) per SLO key, with vectorized window sums over all keys.

Rows of buckets after the last one evaluated wait beside the ring until evaluation reaches them: a batch that
runs minutes ahead of the watermark (a worker's partitions read at different speeds, a large batch) must not
push the oldest buckets of a window out of the ring, or a "30-minute" window would be shorter the further ahead
rows arrive, and alerts would depend on batching.

>>> import numpy as np
>>> w = BurnRateWindows(horizon_buckets=60)
>>> rows = w.rows([("m", ""), ("n", "")])
>>> w.add(rows, np.array([0, 0]), bad=np.array([5.0, 0.0]), total=np.array([10.0, 10.0]), first=np.array([3.0, np.inf]))
0
>>> w.advance(1); bad, total = w.sums(end=1, buckets=5); bad.tolist(), total.tolist()
([5.0, 0.0], [10.0, 10.0])
>>> w.first_bad(0, start=0, end=1)
3.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: An SLO key: (model, client), client None for model-scoped SLOs.
Key = tuple[str, str | None]


class BurnRateWindows:
    """One row per key, one column per bucket of the horizon (a ring indexed by bucket number)."""

    def __init__(self, horizon_buckets: int, initial_keys: int = 16) -> None:
        self.length = int(horizon_buckets)
        self.keys: list[Key | None] = []  # None: a released row, free for the next new key
        self._row_of: dict[Key, int] = {}
        self._free: list[int] = []
        self._bad = np.zeros((initial_keys, self.length), np.float32)
        self._total = np.zeros((initial_keys, self.length), np.float32)
        self._first = np.full((initial_keys, self.length), np.inf)
        self.head: int | None = None  # newest bucket number evaluated (the ring holds the horizon up to it)
        self.dropped = 0  # entries older than the horizon when they reached the ring
        self._ahead: list[tuple[np.ndarray, ...]] = []  # (rows, buckets, bad, total, first) of buckets after head

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def live_keys(self) -> int:
        return len(self._row_of)

    @property
    def memory_bytes(self) -> int:
        return self._bad.nbytes + self._total.nbytes + self._first.nbytes

    def rows(self, keys: Sequence[Key]) -> np.ndarray:
        """Row numbers of the keys, adding rows for new keys."""
        out = np.empty(len(keys), np.int64)
        for i, key in enumerate(keys):
            row = self._row_of.get(key)
            if row is None and self._free:
                row = self._row_of[key] = self._free.pop()
                self.keys[row] = key
            elif row is None:
                row = self._row_of[key] = len(self.keys)
                self.keys.append(key)
            out[i] = row
        if len(self.keys) > len(self._bad):
            self._grow(len(self.keys))
        return out

    def idle_rows(self) -> np.ndarray:
        """Rows of keys with no events anywhere in the horizon."""
        n = len(self.keys)
        live = np.fromiter((k is not None for k in self.keys), bool, count=n)
        waiting = np.zeros(n, bool)
        for entry in self._ahead:
            waiting[entry[0]] = True
        return np.flatnonzero(live & ~waiting & (self._total[:n].sum(axis=1) == 0) & (self._bad[:n].sum(axis=1) == 0))

    def release(self, rows: Sequence[int]) -> None:
        """Forget keys (their windows are empty): memory follows the keys seen within the horizon."""
        for row in rows:
            key = self.keys[row]
            if key is not None:
                del self._row_of[key]
            self.keys[row] = None
            self._free.append(int(row))
        self._bad[rows] = 0.0
        self._total[rows] = 0.0
        self._first[rows] = np.inf

    def _grow(self, needed: int) -> None:
        size = max(needed, 2 * len(self._bad))
        for name, fill in (("_bad", 0.0), ("_total", 0.0), ("_first", np.inf)):
            old = getattr(self, name)
            new = np.full((size, self.length), fill, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def advance(self, bucket: int) -> None:
        """Move the head to ``bucket``, clearing the columns that the ring reuses, and take in the rows that
        waited for it."""
        if self.head is not None and bucket <= self.head:
            return
        if self.head is not None:
            stale = np.arange(self.head + 1, min(bucket, self.head + self.length) + 1) % self.length
            self._bad[:, stale] = 0.0
            self._total[:, stale] = 0.0
            self._first[:, stale] = np.inf
        self.head = bucket
        waiting, self._ahead = self._ahead, []
        for entry in waiting:
            self.add(*entry)

    def add(self, rows: np.ndarray, buckets: np.ndarray, bad: np.ndarray, total: np.ndarray, first: np.ndarray) -> int:
        """Add counts (those of buckets after the head wait for it); returns how many entries were older than
        the horizon and so dropped."""
        if self.head is None:  # nothing evaluated yet: everything waits
            self._ahead.append((rows, buckets, bad, total, first))
            return 0
        later = buckets > self.head
        if later.any():
            self._ahead.append(tuple(a[later] for a in (rows, buckets, bad, total, first)))
            rows, buckets, bad, total, first = (a[~later] for a in (rows, buckets, bad, total, first))
        if not len(rows):
            return 0
        keep = buckets > self.head - self.length
        cols = buckets[keep] % self.length
        np.add.at(self._bad, (rows[keep], cols), bad[keep])
        np.add.at(self._total, (rows[keep], cols), total[keep])
        np.minimum.at(self._first, (rows[keep], cols), first[keep])
        self.dropped += int((~keep).sum())
        return int((~keep).sum())

    def _columns(self, end: int, buckets: int) -> np.ndarray:
        """Ring columns of buckets ``[end - buckets, end)`` that the ring still holds."""
        oldest = end - self.length if self.head is None else self.head - self.length + 1
        start = max(end - buckets, oldest)
        return np.arange(start, end) % self.length

    def sums(self, end: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
        """(bad, total) per key over buckets ``[end - buckets, end)``; call ``advance(end - 1)`` first."""
        cols = self._columns(end, buckets)
        n = len(self.keys)
        return self._bad[:n, cols].sum(axis=1, dtype=np.float64), self._total[:n, cols].sum(axis=1, dtype=np.float64)

    def onset(self, row: int, end: int, buckets: int, rate: float) -> int:
        """First bucket of the trailing run (within ``buckets``) whose error rate exceeds ``rate``;
        empty buckets neither break nor start the run."""
        cols = self._columns(end, buckets)
        total = self._total[row, cols]
        calm = (total > 0) & (self._bad[row, cols] <= rate * total)
        last_calm = np.flatnonzero(calm)
        return end - len(cols) + (int(last_calm[-1]) + 1 if len(last_calm) else 0)

    def first_bad(self, row: int, start: int, end: int) -> float:
        """Earliest offending event time of one key in buckets ``[start, end)``."""
        cols = self._columns(end, end - start)
        return float(self._first[row, cols].min()) if len(cols) else float("inf")
