"""Columnar view of validated events: the unit every detector and aggregator works on. Built once per batch
from the validated records: numpy columns, and every kind of vector as float32 matrices grouped by length.

>>> from monitor.contracts.events import validate_event
>>> make = lambda i, x: validate_event(('{"event_id":"%d","ts":%d,"client_id":"c","input":{"features":%s},'
...     '"prediction":{"label":1,"confidence":0.5}}' % (i, i, x)).encode())
>>> b, rejected = EventBatch.from_records([make(0, [1, 2]), make(1, [3, 4, 5]), make(2, [6, 7])])
>>> {n: rows.tolist() for n, (rows, m) in b.feature_groups().items()}, b.label.tolist(), rejected
({2: [0, 2], 3: [1]}, ['1', '1', '1'], {})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from monitor.contracts.columns import factorize, sorted_positions
from monitor.contracts.events import EncodedEmbedding, InferenceEvent, ModelInput, epoch_seconds
from monitor.contracts.flagged import object_array
from monitor.detect.vectors import Groups, concat_groups, encoded_groups, list_groups, merge_groups, take_groups

__all__ = ["EventBatch", "Groups"]

_NO_INPUT = ModelInput()


@dataclass(frozen=True)
class EventBatch:
    ts: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    event_id: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    client_id: np.ndarray = field(repr=False)
    label: np.ndarray = field(repr=False)
    ground_truth: np.ndarray = field(repr=False)  # object: the label, or None
    traffic: np.ndarray = field(repr=False)  # object: the ``tags.traffic`` class ("" for ordinary traffic)
    features: Groups = field(repr=False, default_factory=dict)
    embeddings: Groups = field(repr=False, default_factory=dict)
    logits: Groups = field(repr=False, default_factory=dict)
    probs: Groups = field(repr=False, default_factory=dict)
    text_rows: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))
    text_values: tuple[str, ...] = field(repr=False, default=())

    @classmethod
    def from_records(cls, records: list[InferenceEvent]) -> tuple[EventBatch, dict[int, str]]:
        """The batch of validated records, and the records whose vectors do not decode (index -> reason):
        the caller drops those (``take``) and dead-letters them. Slices of a few hundred records are fastest
        (their number lists are freed while still in cache); :meth:`concat` joins them."""
        inputs = [r.input or _NO_INPUT for r in records]
        predictions = [r.prediction for r in records]
        embeddings = [i.embedding for i in inputs]
        binary = [row for row, e in enumerate(embeddings) if isinstance(e, EncodedEmbedding)]
        decoded, rejected = encoded_groups(binary, [embeddings[row].b64 for row in binary],  # type: ignore[union-attr]
                                           [embeddings[row].dtype for row in binary])  # type: ignore[union-attr]
        texts = [i for i, x in enumerate(inputs) if x.text is not None and x.features is None]
        batch = cls(
            ts=_epoch_column([r.ts for r in records]),
            confidence=np.array([p.confidence for p in predictions], np.float64),
            event_id=object_array([r.event_id for r in records]),
            model=object_array([r.model for r in records]),
            client_id=object_array([r.client_id for r in records]),
            label=_labels([p.label for p in predictions]),
            ground_truth=_labels([r.ground_truth for r in records]),
            traffic=object_array([t.get("traffic", "") if t else "" for t in [r.tags for r in records]]),
            features=list_groups([i.features for i in inputs]),
            embeddings=merge_groups(list_groups([None if isinstance(e, EncodedEmbedding) else e for e in embeddings]),
                                    decoded),
            logits=list_groups([p.logits for p in predictions]),
            probs=list_groups([p.probs for p in predictions]),
            text_rows=np.asarray(texts, np.int64),
            text_values=tuple(inputs[i].text or "" for i in texts),
        )
        return batch, rejected

    @classmethod
    def concat(cls, parts: list[EventBatch]) -> EventBatch:
        """Consecutive batches as one (rows in order).

        >>> from monitor.contracts.events import validate_event
        >>> make = lambda i, x: validate_event(('{"event_id":"%d","ts":%d,"client_id":"c","input":{"features":%s},'
        ...     '"prediction":{"label":1,"confidence":0.5}}' % (i, i, x)).encode())
        >>> one, two = (EventBatch.from_records(r)[0] for r in ([make(0, [1, 2])], [make(1, [3]), make(2, [4, 5])]))
        >>> both = EventBatch.concat([one, two])
        >>> both.event_id.tolist(), {n: rows.tolist() for n, (rows, m) in both.feature_groups().items()}
        (['0', '1', '2'], {1: [1], 2: [0, 2]})
        """
        if len(parts) == 1:
            return parts[0]
        starts = np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()

        def column(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            column("ts"), column("confidence"), column("event_id"), column("model"), column("client_id"),
            column("label"), column("ground_truth"), column("traffic"),
            features=concat_groups([p.features for p in parts], starts),
            embeddings=concat_groups([p.embeddings for p in parts], starts),
            logits=concat_groups([p.logits for p in parts], starts),
            probs=concat_groups([p.probs for p in parts], starts),
            text_rows=np.concatenate([p.text_rows + start for p, start in zip(parts, starts, strict=True)]),
            text_values=tuple(t for p in parts for t in p.text_values),
        )

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, rows: np.ndarray) -> EventBatch:
        """A sub-batch of the given row indices (or boolean mask), order kept."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, np.int64)
        n = len(self)
        position = np.full(n, -1, np.int64)
        position[rows] = np.arange(len(rows))
        kept_texts = position[self.text_rows] >= 0
        return EventBatch(
            self.ts[rows], self.confidence[rows], self.event_id[rows], self.model[rows], self.client_id[rows],
            self.label[rows], self.ground_truth[rows], self.traffic[rows],
            features=take_groups(self.features, rows, n), embeddings=take_groups(self.embeddings, rows, n),
            logits=take_groups(self.logits, rows, n), probs=take_groups(self.probs, rows, n),
            text_rows=position[self.text_rows[kept_texts]],
            text_values=tuple(t for t, k in zip(self.text_values, kept_texts.tolist(), strict=True) if k),
        )

    @cached_property
    def model_codes(self) -> tuple[list[str], np.ndarray]:
        """The batch's models, sorted, and each row's index among them: found once, used by every step that works
        model by model."""
        return factorize(self.model)

    def model_rows(self, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The models of the given rows, each with the positions within ``rows`` of its own (a boolean mask).

        >>> from monitor.contracts.events import validate_event
        >>> b = EventBatch.from_records([validate_event(('{"event_id":"%d","ts":1,"client_id":"c","model":"%s",'
        ...     '"prediction":{"label":1,"confidence":0.5}}' % (i, m)).encode()) for i, m in enumerate("bab")])[0]
        >>> [(model, mask.tolist()) for model, mask in b.model_rows(np.array([0, 1, 2]))]
        [('a', [False, True, False]), ('b', [True, False, True])]
        """
        names, codes = self.model_codes
        mine = codes[rows]
        if len(names) == 1:
            return [(names[0], np.ones(len(rows), bool))] if len(rows) else []
        return [(names[code], mine == code) for code in np.unique(mine).tolist()]

    @cached_property
    def has_truth(self) -> np.ndarray:
        return self.ground_truth.astype(bool)  # labels are never empty: None is the only falsy value

    @cached_property
    def is_correct(self) -> np.ndarray:
        """Prediction equals ground truth (False where there is no truth; see ``has_truth``)."""
        return self.has_truth & (self.label == self.ground_truth)

    @cached_property
    def is_canary(self) -> np.ndarray:
        return np.char.startswith(self.traffic.astype(str), "canary") if len(self) else np.zeros(0, bool)

    @cached_property
    def is_adversarial_canary(self) -> np.ndarray:
        return self.traffic == "canary-adversarial"

    def feature_groups(self) -> Groups:
        """Raw numeric inputs grouped by length: ``{length: (rows, matrix float32)}`` (read-only)."""
        return self.features

    def embedding_groups(self) -> Groups:
        """Embeddings grouped by dimension: ``{dim: (rows, matrix float32)}`` (read-only)."""
        return self.embeddings

    def logit_groups(self) -> Groups:
        """Logits grouped by number of classes: ``{classes: (rows, matrix float32)}`` (read-only)."""
        return self.logits

    @property
    def texts(self) -> tuple[np.ndarray, list[str]]:
        """Rows whose input is text without raw numeric features, and their texts."""
        return self.text_rows, list(self.text_values)

    @cached_property
    def margin(self) -> np.ndarray:
        """Top-1 minus top-2 class probability (from logits, else logged probabilities); NaN where neither
        was logged. Attacks stop just past the decision boundary: their margins are small."""
        out = np.full(len(self), np.nan)
        for groups, softmax in ((self.probs, False), (self.logits, True)):
            for _, (rows, matrix) in groups.items():
                if matrix.shape[1] < 2:
                    continue
                probs = _softmax(matrix) if softmax else matrix
                top = np.partition(probs, -2, axis=1)[:, -2:]
                out[rows] = top[:, 1] - top[:, 0]
        return out

    @property
    def common_logit_classes(self) -> int:
        """The number of classes most events of the batch logged logits for (0: none logged any)."""
        return max(self.logits, key=lambda c: len(self.logits[c][0])) if self.logits else 0

    def logits_matrix(self, rows: np.ndarray, classes: int) -> np.ndarray:
        """``(len(rows), classes)`` logits of the given rows (sorted batch rows); NaN where an event logged
        none, or logits of another length."""
        out = np.full((len(rows), classes), np.nan, np.float32)
        group = self.logits.get(classes)
        if group is not None:
            have, matrix = group
            at, found = sorted_positions(have, rows)
            out[found] = matrix[at[found]]
        return out


def _epoch_column(values: list) -> np.ndarray:
    """Event times as epoch seconds: one numpy call when all are numbers (the common case)."""
    try:
        return np.array(values, np.float64)
    except TypeError:  # some are RFC 3339 datetimes
        return np.array([epoch_seconds(v) for v in values], np.float64)


def _labels(values: list[str | int | None]) -> np.ndarray:
    """Labels as strings (integer class ids converted; None kept) in an object array."""
    if int in set(map(type, values)):
        values = [v if v is None or isinstance(v, str) else str(v) for v in values]
    return object_array(values)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
