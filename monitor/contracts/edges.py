"""Match edges: a client's query near-duplicated another client's earlier query (per bucket and model, with a
count). They are how a black-box attack spread over many API keys shows: its keys' queries chain to each
other's. Aggregated like the SLI rows (counts add), so they merge across batches, workers and the wire.

>>> import numpy as np
>>> e = MatchEdges.from_events(bucket=np.array([60, 60, 60]), model=np.array(["m"] * 3, dtype=object),
...     client=np.array(["a", "a", "b"], dtype=object), other=np.array(["b", "b", ""], dtype=object))
>>> e.records()
[{'bucket': 60, 'model': 'm', 'client': 'a', 'other': 'b', 'count': 2.0}]
>>> MatchEdges.from_records(e.records()).count.tolist()
[2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from monitor.contracts.columns import concat_columns


@dataclass(frozen=True)
class MatchEdges:
    bucket: np.ndarray  # int64 bucket start
    model: np.ndarray  # object
    client: np.ndarray  # object: the client whose query matched
    other: np.ndarray  # object: the client whose earlier query it matched
    count: np.ndarray  # float64: how many of the client's queries did

    def __len__(self) -> int:
        return len(self.bucket)

    @classmethod
    def empty(cls) -> MatchEdges:
        return cls(np.empty(0, np.int64), np.empty(0, object), np.empty(0, object), np.empty(0, object), np.empty(0))

    @classmethod
    def from_events(cls, bucket: np.ndarray, model: np.ndarray, client: np.ndarray, other: np.ndarray) -> MatchEdges:
        """One edge per event whose ``other`` is not empty, then combined."""
        keep = other.astype(str) != ""
        return cls(bucket[keep].astype(np.int64), model[keep], client[keep], other[keep],
                   np.ones(int(keep.sum()))).combined()

    @classmethod
    def concat(cls, parts: Sequence[MatchEdges]) -> MatchEdges:
        return concat_columns(cls, parts)

    def combined(self) -> MatchEdges:
        """Equal (bucket, model, client, other) edges summed."""
        if not len(self):
            return self
        key = np.char.add(np.char.add(np.char.add(self.bucket.astype(str), "\x1f"), self.model.astype(str)),
                          np.char.add(np.char.add("\x1f", self.client.astype(str)),
                                      np.char.add("\x1f", self.other.astype(str))))
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        return MatchEdges(self.bucket[first], self.model[first], self.client[first], self.other[first],
                          np.bincount(inverse, weights=self.count))

    def take(self, rows: np.ndarray) -> MatchEdges:
        return MatchEdges(*(getattr(self, f.name)[rows] for f in fields(self)))

    def records(self) -> list[dict[str, Any]]:
        names = [f.name for f in fields(self)]
        columns = [getattr(self, n).tolist() for n in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> MatchEdges:
        if not records:
            return cls.empty()
        return cls.of([r["bucket"] for r in records], [r["model"] for r in records], [r["client"] for r in records],
                      [r["other"] for r in records], [r["count"] for r in records])

    @classmethod
    def of(cls, bucket: Sequence[int], model: Sequence[str], client: Sequence[str], other: Sequence[str],
           count: Sequence[float]) -> MatchEdges:
        return cls(np.asarray(bucket, np.int64), np.asarray(model, object), np.asarray(client, object),
                   np.asarray(other, object), np.asarray(count, np.float64))
