"""Mergeable per-bucket SLI aggregates keyed by (bucket, model, client).

Each ingest batch becomes a small table of counters; tables from any number of batches,
partitions or processes combine by addition (and minimum for first-offending timestamps),
so windows can be computed wherever the tables meet.

>>> import numpy as np
>>> rows = SliRows.from_columns(
...     bucket=np.array([0, 0, 60]), model=np.array(["m", "m", "m"], dtype=object),
...     client=np.array(["a", "a", "a"], dtype=object), ts=np.array([1.0, 2.0, 61.0]),
...     flags={"events": np.ones(3, bool), "anomalous": np.array([False, True, True])},
...     confidence=np.array([0.9, 0.5, 0.4]))
>>> len(rows), rows.column("events").tolist(), rows.column("anomalous").tolist(), rows.first_bad("anomalous").tolist()
(2, [2.0, 1.0], [1.0, 1.0], [2.0, 61.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.contracts.columns import factorize

#: Event counters (``traffic_events``, ``anomalous``, ``queries`` and ``query_flagged`` leave canary
#: traffic out; the ``adv_*`` and ``benign_*`` counters are canary-only); the "bad" ones also keep the event time
#: of their first occurrence.
#: ``own_near_dup``: near-duplicates of the client's own earlier queries; ``cross_near_dup``: of another
#: client's; ``private_near_dup``: of its own and of no other client's (repetition that popular content,
#: templates and retries shared across clients do not explain); ``margin_events``: production events with a
#: logged margin (the denominator of the margin sums).
COUNTERS = (
    "events", "traffic_events", "anomalous", "queries", "duplicates", "query_flagged", "labelled", "errors",
    "adv_canary", "adv_fooled", "adv_missed", "benign_canary", "benign_flagged", "clean_events",
    "own_near_dup", "cross_near_dup", "margin_events", "private_near_dup",
)
BAD_COUNTERS = ("anomalous", "query_flagged", "errors", "adv_fooled", "adv_missed", "benign_flagged")
SUMS = ("conf_sum", "conf_sumsq", "clean_conf_sum", "margin_sum", "margin_sumsq")

#: Named SLIs as (bad counter, total counter): the SLO rules refer to these names.
SLI_DEFINITIONS: Mapping[str, tuple[str, str]] = {
    "input_anomaly_rate": ("anomalous", "traffic_events"),
    "near_duplicate_query_rate": ("query_flagged", "queries"),
    "own_near_duplicate_rate": ("own_near_dup", "queries"),
    "cross_near_duplicate_rate": ("cross_near_dup", "queries"),
    "private_near_duplicate_rate": ("private_near_dup", "queries"),
    "error_rate": ("errors", "labelled"),
    "fooling_rate": ("adv_fooled", "adv_canary"),
    "detector_miss_rate": ("adv_missed", "adv_canary"),
    "detector_false_positive_rate": ("benign_flagged", "benign_canary"),
}

#: Query entropy: per-row histograms of hashed predicted labels and of coarse input fingerprints
#: (the largest Blacklight hash of a raw input, or 3 hyperplane bits of an embedding: near-identical
#: queries fall in one bin). Counts add like the counters, so entropy stays mergeable.
ENTROPY_BINS = 8
LABEL_BINS = tuple(f"label_bin_{i}" for i in range(ENTROPY_BINS))
INPUT_BINS = tuple(f"input_bin_{i}" for i in range(ENTROPY_BINS))

#: The per-client tests' histograms (production events): the margin's rank among the live population's
#: margins of its class and input-score band (``margin_rank``, 10 equal bins of [0, 1]; low = suspicious), and
#: the largest profile score on its threshold's scale (``score``, bins at ``SCORE_EDGES``; high = suspicious).
RANK_BINS = 10
SCORE_EDGES = (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
MARGIN_RANK_BINS = tuple(f"margin_rank_{i}" for i in range(RANK_BINS))
SCORE_BINS = tuple(f"score_bin_{i}" for i in range(len(SCORE_EDGES) + 1))
HISTOGRAMS = {"label": LABEL_BINS, "input": INPUT_BINS, "margin_rank": MARGIN_RANK_BINS, "score": SCORE_BINS}

_V1 = COUNTERS[:14] + SUMS[:3] + LABEL_BINS + INPUT_BINS
#: Every column of ``SliRows.values``, in order (also the ``sli-buckets`` wire columns). Columns are only
#: ever appended, so rows stored by an earlier build read with zeros in the new columns.
_V2 = _V1 + COUNTERS[14:17] + SUMS[3:] + MARGIN_RANK_BINS + SCORE_BINS
VALUE_COLUMNS = _V2 + COUNTERS[17:]
_VALUES = VALUE_COLUMNS
_INDEX = {name: i for i, name in enumerate(_VALUES)}
_BAD_INDEX = {name: i for i, name in enumerate(BAD_COUNTERS)}


def value_index(name: str) -> int:
    """Column of a counter or sum in ``SliRows.values``."""
    return _INDEX[name]


@dataclass(frozen=True)
class SliRows:
    """A table: one row per (bucket start, model, client), counters as a float64 matrix."""

    bucket: np.ndarray  # int64 bucket start, epoch seconds
    model: np.ndarray  # object
    client: np.ndarray  # object
    values: np.ndarray  # (rows, len(COUNTERS) + len(SUMS)) float64
    first: np.ndarray  # (rows, len(BAD_COUNTERS)) float64 event time, inf where none

    def __len__(self) -> int:
        return len(self.bucket)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, _INDEX[name]]

    def first_bad(self, name: str) -> np.ndarray:
        return self.first[:, _BAD_INDEX[name]]

    @classmethod
    def empty(cls) -> SliRows:
        return cls(np.empty(0, np.int64), np.empty(0, object), np.empty(0, object),
                   np.empty((0, len(_VALUES))), np.empty((0, len(BAD_COUNTERS))))

    @classmethod
    def from_columns(
        cls,
        bucket: np.ndarray,
        model: np.ndarray,
        client: np.ndarray,
        ts: np.ndarray,
        flags: Mapping[str, np.ndarray],
        confidence: np.ndarray,
        bins: Mapping[str, np.ndarray] | None = None,
        margin: np.ndarray | None = None,
    ) -> SliRows:
        """Aggregate per-event flags (names from ``COUNTERS``) into one row per key; ``bins`` gives each event's
        bin of a histogram of ``HISTOGRAMS`` (-1: not counted); ``margin`` (NaN: none) feeds the margin sums."""
        n = len(bucket)
        values = np.zeros((n, len(_VALUES)))
        for name, flag in flags.items():
            values[:, _INDEX[name]] = flag
        for kind, codes in (bins or {}).items():
            counted = np.flatnonzero(codes >= 0)
            values[counted, _INDEX[HISTOGRAMS[kind][0]] + codes[counted]] = 1.0
        clean = values[:, _INDEX["clean_events"]] > 0
        values[:, _INDEX["conf_sum"]] = confidence
        values[:, _INDEX["conf_sumsq"]] = confidence * confidence
        values[:, _INDEX["clean_conf_sum"]] = np.where(clean, confidence, 0.0)
        if margin is not None:
            counted = np.isfinite(margin) & (values[:, _INDEX["traffic_events"]] > 0)
            values[:, _INDEX["margin_events"]] = counted
            values[:, _INDEX["margin_sum"]] = np.where(counted, margin, 0.0)
            values[:, _INDEX["margin_sumsq"]] = np.where(counted, margin * margin, 0.0)
        first = np.full((n, len(BAD_COUNTERS)), np.inf)
        for name, flag in flags.items():
            if name in _BAD_INDEX:
                first[:, _BAD_INDEX[name]] = np.where(flag, ts, np.inf)
        return cls(bucket.astype(np.int64), model, client, values, first).combined()

    @classmethod
    def concat(cls, tables: Sequence[SliRows]) -> SliRows:
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.empty()
        return cls(
            *(np.concatenate([getattr(t, f) for t in tables]) for f in ("bucket", "model", "client", "values", "first"))
        )

    def combined(self) -> SliRows:
        """Merge rows with equal keys: counters add, first-offending times take the minimum."""
        if not len(self):
            return self
        first_row, inverse = _key_groups(self.bucket, self.model, self.client)
        order, starts = _grouping(inverse)
        values, first = _reduced(np.add, self.values, order, starts), _reduced(np.minimum, self.first, order, starts)
        return SliRows(self.bucket[first_row], self.model[first_row], self.client[first_row], values, first)

    def take(self, mask: np.ndarray) -> SliRows:
        """The rows selected by a boolean mask or index array."""
        return SliRows(self.bucket[mask], self.model[mask], self.client[mask], self.values[mask], self.first[mask])

    def model_totals(self) -> SliRows:
        """One row per (bucket, model), summed over its clients (client ``""``).

        >>> SliRows.from_columns(bucket=np.array([0, 0]), model=np.array(["m", "m"], dtype=object),
        ...     client=np.array(["a", "b"], dtype=object), ts=np.zeros(2), flags={"events": np.ones(2, bool)},
        ...     confidence=np.ones(2)).model_totals().column("events").tolist()
        [2.0]
        """
        return SliRows(self.bucket, self.model, np.full(len(self), "", object), self.values, self.first).combined()

    def by_model_bucket(self, bucket_s: int) -> list[tuple[tuple[str, int], np.ndarray]]:
        """Values summed per (model, bucket number), vectorized; one Python step per group, not per row."""
        if not len(self):
            return []
        models, model_code = factorize(self.model)
        buckets, bucket_code = np.unique(self.bucket // bucket_s, return_inverse=True)
        groups, inverse = np.unique(model_code * len(buckets) + bucket_code, return_inverse=True)
        order, starts = _grouping(inverse)
        sums = np.add.reduceat(self.values[order], starts, axis=0)
        return [((str(models[g // len(buckets)]), int(buckets[g % len(buckets)])), values)
                for g, values in zip(groups.tolist(), sums, strict=True)]

    def entropy_bits(self, kind: str) -> np.ndarray:
        """Per-row Shannon entropy (bits) of the ``"label"`` or ``"input"`` histogram; NaN where empty."""
        return entropy_bits(self.values[:, histogram_columns(kind)])

    def to_records(self) -> list[dict]:
        """Plain dicts for the ``sli-buckets`` topic (inf first times become null)."""
        return [
            {
                "bucket": int(b),
                "model": m,
                "client_id": c,
                "counters": dict(zip(_VALUES, v.tolist(), strict=True)),
                "first_bad_ts": {
                    k: (None if not np.isfinite(t) else t) for k, t in zip(BAD_COUNTERS, f.tolist(), strict=True)
                },
            }
            for b, m, c, v, f in zip(self.bucket, self.model, self.client, self.values, self.first, strict=True)
        ]


def summed_by(table: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``table`` summed per distinct combination of ``keys`` (columns of strings or integers), in key
    order: the first row of each combination, and its sums (as :meth:`SliRows.combined` sums its values).

    >>> summed_by(np.eye(3), np.array(["m", "m", "m"], dtype=object), np.array(["b", "a", "b"], dtype=object))
    (array([1, 0]), array([[0., 1., 0.],
           [1., 0., 1.]]))
    """
    first_row, inverse = _key_groups(*keys)
    order, starts = _grouping(inverse)
    return first_row, _reduced(np.add, table, order, starts)


def _key_groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct combination of ``keys``'s first row, in key order (strings by name), and each row's group."""
    key = np.zeros(len(keys[0]), np.int64)
    for column in keys:
        _, code = factorize(column) if column.dtype == object else np.unique(column, return_inverse=True)
        key = key * (int(code.max()) + 1) + code.reshape(-1)
    _, first_row, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first_row, inverse.reshape(-1)


def _grouping(inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order that makes each group (codes 0..k-1, all present) contiguous, and where each starts:
    sums by ``reduceat``, much faster than ``np.add.at`` on wide rows."""
    order = np.argsort(inverse, kind="stable")
    return order, np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])


def _reduced(ufunc: np.ufunc, table: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` over the groups of :func:`_grouping`, with groups of one row copied, not reduced: on
    wide rows ``reduceat`` costs about 2 us a group out of cache, and most keys of a batch occur once.

    >>> table = np.arange(8.0).reshape(4, 2)
    >>> _reduced(np.add, table, np.array([2, 0, 3, 1]), np.array([0, 1, 3])).tolist()
    [[4.0, 5.0], [6.0, 8.0], [2.0, 3.0]]
    """
    sizes = np.diff(np.r_[starts, len(order)])
    out = table[order[starts]]
    several = sizes > 1
    if several.any():
        rows = order[np.repeat(several, sizes)]
        out[several] = ufunc.reduceat(table[rows], np.r_[0, np.cumsum(sizes[several])[:-1]], axis=0)
    return out


def histogram_columns(kind: str) -> slice:
    """The columns of one histogram of ``HISTOGRAMS`` (``label``, ``input``, ``margin_rank``, ``score``)."""
    first = _INDEX[HISTOGRAMS[kind][0]]
    return slice(first, first + len(HISTOGRAMS[kind]))


def entropy_bits(histograms: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of counts; NaN for an all-zero row.

    >>> entropy_bits(np.array([[4, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])).tolist()
    [0.0, 2.0, nan]
    """
    histograms = np.atleast_2d(np.asarray(histograms, np.float64))
    totals = histograms.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = histograms / totals
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    out = terms.sum(axis=1)
    out[totals[:, 0] <= 0] = np.nan
    return out


#: Per-model series the drift detectors can watch (besides every ratio SLI of ``SLI_DEFINITIONS``).
DERIVED_SERIES = ("clean_confidence_mean", "label_entropy", "input_entropy", "query_rate", "confidence_stddev",
                  "margin_mean", "margin_stddev")
SERIES = DERIVED_SERIES + tuple(SLI_DEFINITIONS)


def series_values(name: str, values: np.ndarray, bucket_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) per row of summed counters (columns as ``SliRows.values``) for a named series.

    ``query_rate`` is production queries per second over the bucket; the entropies are in bits; the
    standard deviations are of the events' confidence and top-1 minus top-2 margin (the confidence-variance SLI).

    >>> rows = SliRows.from_columns(bucket=np.zeros(4, np.int64), model=np.array(["m"] * 4, dtype=object),
    ...     client=np.array(["c"] * 4, dtype=object), ts=np.zeros(4),
    ...     flags={"events": np.ones(4, bool), "traffic_events": np.ones(4, bool)}, confidence=np.ones(4),
    ...     bins={"label": np.array([0, 1, 0, 1])})
    >>> [series_values(s, rows.values, 60)[0].tolist() for s in ("label_entropy", "input_entropy", "query_rate")]
    [[1.0], [nan], [0.06666666666666667]]
    """
    values = np.atleast_2d(values)
    if name in ("label_entropy", "input_entropy"):
        histogram = values[:, histogram_columns(name.split("_")[0])]
        return entropy_bits(histogram), histogram.sum(axis=1)
    if name == "query_rate":
        events = values[:, _INDEX["traffic_events"]]
        return events / bucket_s, events
    if name in ("confidence_stddev", "margin_mean", "margin_stddev"):
        prefix, count = ("conf", "events") if name.startswith("confidence") else ("margin", "margin_events")
        weight = values[:, _INDEX[count]]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = values[:, _INDEX[f"{prefix}_sum"]] / weight
            if name == "margin_mean":
                return np.where(weight > 0, mean, np.nan), weight
            variance = values[:, _INDEX[f"{prefix}_sumsq"]] / weight - mean * mean
            return np.where(weight > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan), weight
    numerator, denominator = ("clean_conf_sum", "clean_events") if name == "clean_confidence_mean" \
        else SLI_DEFINITIONS[name]
    weight = values[:, _INDEX[denominator]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, values[:, _INDEX[numerator]] / np.where(weight > 0, weight, 1.0), np.nan), weight
