"""Flagged events: the one columnar type for events a detector flagged, from the engine or the scorer to
alert evidence, the ``sli-buckets`` wire form and the ``suspicious-inputs`` topic.

>>> import numpy as np
>>> f = FlaggedEvents.of(event_id=["e1", "e2"], model=["m", "m"], client_id=["c", "d"], ts=[1.0, 2.0],
...                      reason=["anomalous", "near-duplicate"], fingerprint=["ab", ""])
>>> len(f), f.take(np.array([False, True])).records()
(2, [{'event_id': 'e2', 'model': 'm', 'client_id': 'd', 'ts': 2.0, 'reason': 'near-duplicate', 'fingerprint': ''}])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

#: Why an event was flagged (``reason`` values).
REASONS = ("anomalous", "near-duplicate", "anomalous+near-duplicate", "anomalous-embedding")


def _objects(values: Any) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


@dataclass(frozen=True)
class FlaggedEvents:
    """Columns of flagged events (all the same length)."""

    event_id: np.ndarray  # object
    model: np.ndarray  # object
    client_id: np.ndarray  # object
    ts: np.ndarray  # float64 event time
    reason: np.ndarray  # object, one of REASONS
    fingerprint: np.ndarray  # object: content hash of the raw input, else LSH of the embedding, else ""

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def of(cls, event_id: Sequence[str], model: Sequence[str], client_id: Sequence[str], ts: Sequence[float],
           reason: Sequence[str], fingerprint: Sequence[str]) -> FlaggedEvents:
        return cls(_objects(event_id), _objects(model), _objects(client_id), np.asarray(ts, np.float64),
                   _objects(reason), _objects(fingerprint))

    @classmethod
    def empty(cls) -> FlaggedEvents:
        return cls.of([], [], [], [], [], [])

    @classmethod
    def concat(cls, parts: Sequence[FlaggedEvents]) -> FlaggedEvents:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def take(self, rows: np.ndarray) -> FlaggedEvents:
        """The rows selected by a boolean mask or an index array."""
        return FlaggedEvents(*(getattr(self, f.name)[rows] for f in fields(self)))

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per event: the ``suspicious-inputs`` record (keyed by ``fingerprint`` downstream)."""
        names = [f.name for f in fields(self)]
        columns = [getattr(self, n).tolist() for n in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
