"""Columnar view of validated events: the unit every detector and aggregator works on.

>>> from monitor.contracts.events import InferenceEvent
>>> make = lambda i, x: InferenceEvent.model_validate({"event_id": str(i), "ts": i, "client_id": "c",
...     "prediction": {"label": "1", "confidence": 0.5}, "input": {"features": x}})
>>> b = EventBatch.from_events([make(0, [1, 2]), make(1, [3, 4, 5]), make(2, [6, 7])])
>>> {n: rows.tolist() for n, (rows, m) in b.feature_groups().items()}
{2: [0, 2], 3: [1]}
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from monitor.contracts.events import InferenceEvent

Groups = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class EventBatch:
    events: tuple[InferenceEvent, ...]
    ts: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    event_id: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    client_id: np.ndarray = field(repr=False)
    label: np.ndarray = field(repr=False)
    ground_truth: np.ndarray = field(repr=False)
    traffic: np.ndarray = field(repr=False)

    @classmethod
    def from_events(cls, events: list[InferenceEvent]) -> EventBatch:
        def column(values: list) -> np.ndarray:
            array = np.empty(len(values), dtype=object)
            array[:] = values
            return array

        return cls(
            events=tuple(events),
            ts=np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events)),
            confidence=np.fromiter((e.prediction.confidence for e in events), dtype=np.float64, count=len(events)),
            event_id=column([e.event_id for e in events]),
            model=column([e.model for e in events]),
            client_id=column([e.client_id for e in events]),
            label=column([e.prediction.label for e in events]),
            ground_truth=column([e.ground_truth for e in events]),
            traffic=column([e.traffic for e in events]),
        )

    def __len__(self) -> int:
        return len(self.events)

    def take(self, rows: np.ndarray) -> EventBatch:
        """A sub-batch of the given row indices (or boolean mask), order kept."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return EventBatch(
            events=tuple(self.events[i] for i in rows),
            **{name: getattr(self, name)[rows] for name in _COLUMNS},
        )

    @cached_property
    def has_truth(self) -> np.ndarray:
        return np.array([g is not None for g in self.ground_truth], dtype=bool)

    @cached_property
    def is_correct(self) -> np.ndarray:
        """Prediction equals ground truth (False where there is no truth; see ``has_truth``)."""
        return self.has_truth & (self.label == self.ground_truth)

    @cached_property
    def is_canary(self) -> np.ndarray:
        return np.array([t.startswith("canary") for t in self.traffic], dtype=bool)

    @cached_property
    def is_adversarial_canary(self) -> np.ndarray:
        return self.traffic == "canary-adversarial"

    @cached_property
    def _feature_groups(self) -> Groups:
        return _group_vectors(self.events, lambda e: e.input.features_array() if e.input else None)

    @cached_property
    def _embedding_groups(self) -> Groups:
        return _group_vectors(self.events, lambda e: e.input.embedding_array() if e.input else None)

    @cached_property
    def _logit_groups(self) -> Groups:
        return _group_vectors(
            self.events,
            lambda e: None if e.prediction.logits is None else np.asarray(e.prediction.logits, np.float32),
        )

    def feature_groups(self) -> Groups:
        """Raw numeric inputs grouped by length: ``{length: (rows, matrix float32)}`` (built once; read-only)."""
        return self._feature_groups

    def embedding_groups(self) -> Groups:
        """Embeddings grouped by dimension: ``{dim: (rows, matrix float32)}`` (built once; read-only)."""
        return self._embedding_groups

    @cached_property
    def _prob_groups(self) -> Groups:
        return _group_vectors(
            self.events,
            lambda e: None if e.prediction.probs is None else np.asarray(e.prediction.probs, np.float32),
        )

    @cached_property
    def margin(self) -> np.ndarray:
        """Top-1 minus top-2 class probability (from logits, else logged probabilities); NaN where neither
        was logged. Attacks stop just past the decision boundary: their margins are small."""
        out = np.full(len(self), np.nan)
        for groups, softmax in ((self._prob_groups, False), (self._logit_groups, True)):
            for _, (rows, matrix) in groups.items():
                if matrix.shape[1] < 2:
                    continue
                probs = _softmax(matrix) if softmax else matrix
                top = np.partition(probs, -2, axis=1)[:, -2:]
                out[rows] = top[:, 1] - top[:, 0]
        return out

    @cached_property
    def texts(self) -> tuple[np.ndarray, list[str]]:
        """Rows whose input is text without raw numeric features, and their texts."""
        rows, texts = [], []
        for i, event in enumerate(self.events):
            if event.input is not None and event.input.text is not None and event.input.features is None:
                rows.append(i)
                texts.append(event.input.text)
        return np.asarray(rows, np.int64), texts

    def logit_groups(self) -> Groups:
        """Logits grouped by number of classes: ``{classes: (rows, matrix float32)}`` (built once; read-only)."""
        return self._logit_groups


_COLUMNS = ("ts", "confidence", "event_id", "model", "client_id", "label", "ground_truth", "traffic")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _group_vectors(events: tuple[InferenceEvent, ...], extract) -> Groups:
    rows: dict[int, list[int]] = defaultdict(list)
    vectors: dict[int, list[np.ndarray]] = defaultdict(list)
    for index, event in enumerate(events):
        vector = extract(event)
        if vector is not None:
            rows[vector.size].append(index)
            vectors[vector.size].append(vector)
    return {size: (np.asarray(rows[size], dtype=np.int64), np.stack(vectors[size])) for size in rows}
