"""How unusually low is a prediction's margin, for its class and for how typical its input looks, compared with
the live population? An online conditional distribution, learned from the traffic itself.

Attacks stop just past the decision boundary, so their top-1 minus top-2 margin is small; but benign
inputs that are blurred, noisy or simply hard also have small margins, and they look atypical to the
input profile. The margin *given* the predicted class and the input's profile score separates the two:
an adversarial input looks ordinary yet sits at the boundary. Measured on the scenario families (see
BENCHMARKS.md): against a fixed training reference this conditioning fails (production inputs all score
higher than training inputs), against the live population it works; hence an online estimate.

Each event gets ``rank``: the share of the population's margins below its own, within its (model, class,
score band) cell, falling back to coarser cells while a cell holds fewer than ``min_count`` (decayed)
events; NaN while even the model's whole population is too small, or where no margin was logged. Uniform
on [0, 1] for benign traffic by construction; small for attacks.

The population an event is ranked against is the events of the buckets that ended ``lag_s`` or more before its
own bucket began, decayed with a half-life in event time to that moment (a population-wide change is absorbed
within hours). So an event's rank depends on its bucket and on what came ``lag_s`` before it, not on the
batch it was read in or on the order of reading: replay gives the same ranks with any batch size, and an
ingest worker the ranks replay gives on the same events, while its partitions are read within ``lag_s`` of each
other in event time (an event of a bucket already folded into the settled population, later than about twice
``lag_s``, is folded into it late, decayed to its bucket's end). An attacker's own queries join the population
only ``lag_s`` after they are ranked. The state is a handful of numpy arrays (picklable), and two states merge by
addition. Ingest workers share what they add (:class:`MarginCounts`, topic ``margin-counts``), so that each ranks
against the margins of every worker's partitions, as replay does on the whole stream.

>>> rng = np.random.default_rng(0)
>>> ranks = MarginRanks(min_count=50, lag_s=600)
>>> labels = rng.integers(0, 3, 3000).astype(str).astype(object)
>>> margins = np.clip(rng.normal(0.8, 0.1, 3000), 0, 1)
>>> ranks.update("m", labels, np.zeros(3000), margins, buckets=np.zeros(3000, np.int64))
>>> later = np.full(2, 660)   # the bucket that starts when bucket 0 has been over for lag_s
>>> u = ranks.rank("m", np.array(["1", "1"], dtype=object), np.zeros(2), np.array([0.8, 0.3]), later)
>>> bool(0.35 < u[0] < 0.65), bool(u[1] < 0.01)
(True, True)
>>> bool(np.isnan(ranks.rank("m", np.array(["1"], dtype=object), np.zeros(1), np.array([0.8]), np.full(1, 600))[0]))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.contracts.margin_counts import MarginCounts
from monitor.contracts.sli import summed_by

#: Bands of the profile score on its threshold scale (0: the reference median, 1: the threshold).
SCORE_BANDS = np.array([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
MARGIN_BINS = 40
#: An event is ranked against the buckets that ended this long before its own began.
DEFAULT_LAG_S = 600.0
#: How far in event time a worker may lag its peers and still rank exactly as replay (see :meth:`MarginRanks.add`).
PEER_HORIZON_S = 2 * 3600.0


def _empty_counts(labels: int = 0) -> np.ndarray:
    return np.zeros((labels, len(SCORE_BANDS) + 1, MARGIN_BINS))


@dataclass
class _ModelState:
    labels: dict[str, int] = field(default_factory=dict)
    settled: np.ndarray = field(default_factory=_empty_counts)  # buckets before ``settled_until``, decayed to it
    settled_until: float = float("-inf")  # the end of the last bucket folded into ``settled``
    recent: dict[int, np.ndarray] = field(default_factory=dict)  # bucket start -> its events' counts (not decayed)

    def codes(self, labels: np.ndarray, grow: bool) -> np.ndarray:
        """Label indices; unknown labels get new rows when ``grow``, else -1."""
        distinct, inverse = np.unique(labels.astype(str), return_inverse=True)
        out = []
        for label in distinct.tolist():
            if label not in self.labels and grow:
                self.labels[label] = len(self.labels)
            out.append(self.labels.get(label, -1))
        if len(self.labels) > len(self.settled):
            self.settled = _grown(self.settled, len(self.labels))
            self.recent = {bucket: _grown(counts, len(self.labels)) for bucket, counts in self.recent.items()}
        return np.asarray(out, np.int64)[inverse]


def _grown(counts: np.ndarray, labels: int) -> np.ndarray:
    out = _empty_counts(labels)
    out[:len(counts)] = counts
    return out


class MarginRanks:
    """The population's margin distribution per (model, predicted class, score band), decayed in event time, kept
    per bucket for ``lag_s`` and beyond (``bucket_s``: the length of a bucket, whose starts ``buckets`` give)."""

    def __init__(self, half_life_s: float = 6 * 3600.0, min_count: float = 200.0, bucket_s: int = 60,
                 lag_s: float = DEFAULT_LAG_S) -> None:
        self.half_life_s = half_life_s
        self.min_count = min_count
        self.bucket_s = bucket_s
        self.lag_s = lag_s
        self._models: dict[str, _ModelState] = {}

    def rank(self, model: str, labels: np.ndarray, scores: np.ndarray, margins: np.ndarray,
             buckets: np.ndarray) -> np.ndarray:
        """Each event's rank in [0, 1] among the margins of its cell in the population its bucket sees (NaN: not
        enough data)."""
        state = self._models.get(model)
        out = np.full(len(margins), np.nan)
        usable = np.isfinite(margins)
        if state is None or not usable.any() or not len(state.labels):
            return out
        label = state.codes(labels, grow=False)
        for bucket in np.unique(buckets[usable]).tolist():
            mine = np.flatnonzero(usable & (buckets == bucket))
            out[mine] = self._ranks(self._population(state, bucket - self.lag_s), label[mine], _bands(scores[mine]),
                                    margins[mine])
        return out

    def update(self, model: str, labels: np.ndarray, scores: np.ndarray, margins: np.ndarray,
               buckets: np.ndarray) -> None:
        """Add events to the population of their buckets. The buckets that ended twice ``lag_s`` before the oldest
        one added are folded into the settled population: the events ranked next (these, and those that come with
        less than ``lag_s`` of disorder after them) see only buckets that ended later than that."""
        self.add(count_margins(model, labels, scores, margins, buckets))

    def add(self, counts: MarginCounts, peer: bool = False) -> None:
        """Add counted events (:meth:`update`'s, or another worker's: ``peer``) to the population of their buckets,
        settling as :meth:`update` does. A peer's buckets settle only once they are :data:`PEER_HORIZON_S` older than
        the newest it sent: a worker that lags its peers by less than that in event time (a backlog) still ranks
        each event against the buckets that ended ``lag_s`` before it, not against its peers' later ones."""
        if not len(counts):
            return
        state = self._models.setdefault(counts.model, _ModelState())
        label = state.codes(np.asarray(counts.labels, dtype=object), grow=True)[counts.label]
        for bucket in np.unique(counts.bucket).tolist():
            mine = counts.bucket == bucket
            cells = state.recent.setdefault(int(bucket), _empty_counts(len(state.labels)))
            np.add.at(cells, (label[mine], counts.band[mine], counts.bin[mine]), counts.count[mine])
        until = float(counts.bucket.max()) - PEER_HORIZON_S if peer else float(counts.bucket.min()) - 2 * self.lag_s
        self._settle(state, until)

    def merge(self, other: MarginRanks) -> None:
        """Add another estimator's counts (e.g. another ingest worker's): its buckets to these, its settled
        population to this one, both decayed to the later of the two."""
        for model, theirs in other._models.items():
            mine = self._models.setdefault(model, _ModelState())
            codes = mine.codes(np.array(list(theirs.labels), dtype=object), grow=True)
            for bucket, counts in theirs.recent.items():
                mine.recent.setdefault(bucket, _empty_counts(len(mine.labels)))[codes] += counts
            until = max(mine.settled_until, theirs.settled_until)
            settled = _empty_counts(len(mine.labels))
            settled[codes] = theirs.settled * self._decay(until - theirs.settled_until)
            mine.settled = mine.settled * self._decay(until - mine.settled_until) + settled
            mine.settled_until = until
            self._settle(mine, until)

    def _population(self, state: _ModelState, at: float) -> np.ndarray:
        """The counts of the buckets that ended by ``at``, decayed to it (the settled population as it is where
        ``at`` is before its end)."""
        population = state.settled * self._decay(at - state.settled_until)
        for bucket, counts in state.recent.items():
            end = bucket + self.bucket_s
            if end <= at:
                population = population + counts * self._decay(at - end)
        return population

    def _settle(self, state: _ModelState, until: float) -> None:
        """Fold the buckets that ended by ``until`` into the settled population, oldest first (one that ended before
        the settled population's end, a late one or a merged one, decayed to that end)."""
        for bucket in sorted(b for b in state.recent if b + self.bucket_s <= until):
            end, counts = bucket + self.bucket_s, state.recent.pop(bucket)
            if end < state.settled_until:
                state.settled += counts * self._decay(state.settled_until - end)
                continue
            state.settled = state.settled * self._decay(end - state.settled_until) + counts
            state.settled_until = end

    def _decay(self, elapsed: float) -> float:
        """The weight of counts ``elapsed`` seconds old (none yet, or in the future: 1)."""
        return 0.5 ** (elapsed / self.half_life_s) if np.isfinite(elapsed) and elapsed > 0 else 1.0

    def _ranks(self, c: np.ndarray, label: np.ndarray, band: np.ndarray, margins: np.ndarray) -> np.ndarray:
        """Ranks against the counts ``c``, each in the finest cell (class and band, class, band, model) that holds
        ``min_count``."""
        out = np.full(len(margins), np.nan)
        position = np.clip(margins, 0.0, 1.0) * MARGIN_BINS
        bin_ = np.minimum(position.astype(np.int64), MARGIN_BINS - 1)
        within = position - bin_
        tables = (c, c.sum(axis=1, keepdims=True), c.sum(axis=0, keepdims=True),
                  c.sum(axis=(0, 1), keepdims=True))  # cell, class, band, model: finest first
        chosen = np.full(len(margins), -1)
        for level in range(len(tables) - 1, -1, -1):  # the finest level that is full enough wins
            table = tables[level]
            row = np.where(label >= 0, label, 0) if table.shape[0] > 1 else np.zeros_like(label)
            col = band if table.shape[1] > 1 else np.zeros_like(band)
            enough = table[row, col].sum(axis=1) >= self.min_count
            if level in (0, 1):
                enough &= label >= 0
            chosen = np.where(enough, level, chosen)
        for level, table in enumerate(tables):
            mine = np.flatnonzero(chosen == level)
            if not len(mine):
                continue
            row = label[mine] if table.shape[0] > 1 else np.zeros(len(mine), np.int64)
            col = band[mine] if table.shape[1] > 1 else np.zeros(len(mine), np.int64)
            hist = table[row, col]
            at = np.arange(len(mine))
            below = np.cumsum(hist, axis=1)[at, bin_[mine]] - hist[at, bin_[mine]]
            out[mine] = (below + hist[at, bin_[mine]] * within[mine]) / hist.sum(axis=1)
        return out


def count_margins(model: str, labels: np.ndarray, scores: np.ndarray, margins: np.ndarray,
                  buckets: np.ndarray) -> MarginCounts:
    """The events with a margin counted per cell (class, score band, margin bin) of their bucket: what they add to
    the population (:meth:`MarginRanks.add`), here or in another worker.

    >>> c = count_margins("m", np.array(["7", "7", "1"], dtype=object), np.zeros(3), np.array([0.9, 0.9, 0.2]),
    ...                   np.array([60, 60, 120]))
    >>> c.labels, c.bucket.tolist(), c.count.tolist()
    (('1', '7'), [60, 120], [2.0, 1.0])
    """
    usable = np.isfinite(margins)
    names, label = np.unique(labels[usable].astype(str), return_inverse=True)
    band = _bands(scores[usable])
    bin_ = np.minimum((np.clip(margins[usable], 0, 1) * MARGIN_BINS).astype(np.int64), MARGIN_BINS - 1)
    return _cells(model, tuple(names.tolist()), np.asarray(buckets, np.int64)[usable], label, band, bin_,
                  np.ones(len(label)))


def combined_counts(parts: list[MarginCounts]) -> list[MarginCounts]:
    """Counts of several batches as one per model (classes united, equal cells summed), models in order.

    >>> one = count_margins("m", np.array(["7"], dtype=object), np.zeros(1), np.array([0.9]), np.array([60]))
    >>> two = count_margins("m", np.array(["1", "7"], dtype=object), np.zeros(2), np.array([0.2, 0.9]), np.full(2, 60))
    >>> [(c.labels, c.label.tolist(), c.count.tolist()) for c in combined_counts([one, two])]
    [(('1', '7'), [0, 1], [1.0, 2.0])]
    """
    out = []
    for model in sorted({p.model for p in parts}):
        mine = [p for p in parts if p.model == model]
        labels = tuple(sorted({label for p in mine for label in p.labels}))
        code = {label: i for i, label in enumerate(labels)}
        label = np.concatenate([np.array([code[name] for name in p.labels], np.int64)[p.label] for p in mine])
        bucket, band, bin_, count = (np.concatenate([getattr(p, name) for p in mine])
                                     for name in ("bucket", "band", "bin", "count"))
        out.append(_cells(model, labels, bucket, label, band, bin_, count))
    return out


def _cells(model: str, labels: tuple[str, ...], bucket: np.ndarray, label: np.ndarray, band: np.ndarray,
           bin_: np.ndarray, count: np.ndarray) -> MarginCounts:
    """Counts summed per (bucket, cell), in order (:func:`~monitor.contracts.sli.summed_by`, as SLI rows are)."""
    if not len(count):
        return MarginCounts(model, labels, *(np.zeros(0, np.int64),) * 4, np.zeros(0))
    cell = np.ravel_multi_index((label, band, bin_), (max(len(labels), 1), len(SCORE_BANDS) + 1, MARGIN_BINS))
    first, sums = summed_by(np.asarray(count, np.float64)[:, None], bucket, cell)
    return MarginCounts(model, labels, bucket[first], label[first].astype(np.int64), band[first].astype(np.int64),
                        bin_[first].astype(np.int64), sums[:, 0])


def _bands(scores: np.ndarray) -> np.ndarray:
    """Score band of each event; unscored events (NaN) share band 0."""
    return np.where(np.isfinite(scores), np.searchsorted(SCORE_BANDS, np.nan_to_num(scores, nan=-np.inf)), 0)
