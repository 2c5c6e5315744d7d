"""Flagged events: the one columnar type for events a detector flagged, from the engine or the scorer to
alert evidence, the ``sli-buckets`` wire form and the ``suspicious-inputs`` topic (``advmon replay
--suspicious-out``), where each one says why: every profile score, raw and on its threshold's scale (1: the
threshold), the prediction margin and its rank among the population's, and its near-duplicate matches.

>>> import numpy as np
>>> f = FlaggedEvents.of(event_id=["e1", "e2"], model=["m", "m"], client_id=["c", "d"], ts=[1.0, 2.0],
...                      reason=["anomalous", "near-duplicate"], fingerprint=["ab", ""])
>>> len(f), f.take(np.array([False, True])).records()[0]["reason"]
(2, 'near-duplicate')
>>> sorted(f.records()[0])[:5]
['client_id', 'cross_near_duplicate', 'event_id', 'fingerprint', 'margin']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from monitor.contracts.columns import concat_columns

#: Why an event was flagged (``reason`` values): by a raw-input profile score (the engine), by the matcher as a
#: near-duplicate that no profile score flagged, or by an embedding score (the scorer). Records of earlier builds
#: may say "anomalous+near-duplicate"; an event both flag is now reported once, as "anomalous".
REASONS = ("anomalous", "near-duplicate", "anomalous-embedding", "anomalous+near-duplicate")
#: The profile scores a flagged event carries, as (space, score) columns of ``scores`` and ``ratios``.
SCORE_COLUMNS = tuple(f"{space}.{score}" for space in ("features", "embedding")
                      for score in ("mahalanobis", "knn", "energy"))


def object_array(values: Any) -> np.ndarray:
    """A 1-d object array of ``values`` (strings, None), never a 2-d one even if they are sequences."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def _missing(n: int) -> dict[str, np.ndarray]:
    return {"scores": np.full((n, len(SCORE_COLUMNS)), np.nan), "ratios": np.full((n, len(SCORE_COLUMNS)), np.nan),
            "margin": np.full(n, np.nan), "margin_rank": np.full(n, np.nan), "own_near_duplicate": np.zeros(n, bool),
            "cross_near_duplicate": np.zeros(n, bool), "matched_client": np.full(n, "", dtype=object)}


@dataclass(frozen=True)
class FlaggedEvents:
    """Columns of flagged events (all the same length); what a source did not measure is NaN or empty."""

    event_id: np.ndarray  # object
    model: np.ndarray  # object
    client_id: np.ndarray  # object
    ts: np.ndarray  # float64 event time
    reason: np.ndarray  # object, one of REASONS
    fingerprint: np.ndarray  # object: content hash of the raw input, else LSH of the embedding, else ""
    scores: np.ndarray  # (n, len(SCORE_COLUMNS)) raw profile scores
    ratios: np.ndarray  # (n, len(SCORE_COLUMNS)) the same on the threshold's scale: 0 reference median, 1 threshold
    margin: np.ndarray  # top-1 minus top-2 probability
    margin_rank: np.ndarray  # its rank among the live population's of its class and score band
    own_near_duplicate: np.ndarray  # bool
    cross_near_duplicate: np.ndarray  # bool
    matched_client: np.ndarray  # object: the other client a cross match was with

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def of(cls, event_id: Sequence[str] | np.ndarray, model: Sequence[str] | np.ndarray,
           client_id: Sequence[str] | np.ndarray, ts: Sequence[float] | np.ndarray, reason: Sequence[str] | np.ndarray,
           fingerprint: Sequence[str] | np.ndarray, **details: np.ndarray) -> FlaggedEvents:
        """Identity columns; ``details`` (scores, ratios, margin, ...) default to not measured."""
        return cls(object_array(event_id), object_array(model), object_array(client_id), np.asarray(ts, np.float64),
                   object_array(reason), object_array(fingerprint), **{**_missing(len(event_id)), **details})

    @classmethod
    def empty(cls) -> FlaggedEvents:
        return cls.of([], [], [], [], [], [])

    @classmethod
    def concat(cls, parts: Sequence[FlaggedEvents]) -> FlaggedEvents:
        return concat_columns(cls, parts)

    def take(self, rows: np.ndarray) -> FlaggedEvents:
        """The rows selected by a boolean mask or an index array."""
        return FlaggedEvents(*(getattr(self, f.name)[rows] for f in fields(self)))

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per event: the ``suspicious-inputs`` record (keyed by ``fingerprint`` downstream);
        ``scores`` maps each measured profile score to ``{"score", "ratio"}``."""
        names = [f.name for f in fields(self) if f.name not in ("scores", "ratios")]
        columns = [getattr(self, n).tolist() for n in names]
        out = []
        for i, row in enumerate(zip(*columns, strict=True)):
            record = {n: (None if isinstance(v, float) and v != v else v) for n, v in zip(names, row, strict=True)}
            record["scores"] = {column: {"score": float(s), "ratio": float(r)}
                                for column, s, r in zip(SCORE_COLUMNS, self.scores[i], self.ratios[i], strict=True)
                                if np.isfinite(s)}
            out.append(record)
        return out
