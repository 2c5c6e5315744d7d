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
on [0, 1] for benign traffic by construction; small for attacks. Events are ranked against the state
*before* their batch is added. The state decays with a half-life in event time (a population-wide change
is absorbed within hours), is a handful of numpy arrays (picklable), and two states merge by addition.

>>> rng = np.random.default_rng(0)
>>> ranks = MarginRanks(min_count=50)
>>> labels = rng.integers(0, 3, 3000).astype(str).astype(object)
>>> margins = np.clip(rng.normal(0.8, 0.1, 3000), 0, 1)
>>> ranks.update("m", labels, np.zeros(3000), margins, ts=np.arange(3000.0))
>>> u = ranks.rank("m", np.array(["1", "1"], dtype=object), np.zeros(2), np.array([0.8, 0.3]))
>>> bool(0.35 < u[0] < 0.65), bool(u[1] < 0.01)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Bands of the profile score on its threshold scale (0: the reference median, 1: the threshold).
SCORE_BANDS = np.array([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
MARGIN_BINS = 40


@dataclass
class _ModelState:
    labels: dict[str, int] = field(default_factory=dict)
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, len(SCORE_BANDS) + 1, MARGIN_BINS)))
    ts: float = float("-inf")  # event time the counts are decayed to

    def codes(self, labels: np.ndarray, grow: bool) -> np.ndarray:
        """Label indices; unknown labels get new rows when ``grow``, else -1."""
        distinct, inverse = np.unique(labels.astype(str), return_inverse=True)
        out = []
        for label in distinct.tolist():
            if label not in self.labels and grow:
                self.labels[label] = len(self.labels)
            out.append(self.labels.get(label, -1))
        if len(self.labels) > len(self.counts):
            grown = np.zeros((len(self.labels), *self.counts.shape[1:]))
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        return np.asarray(out, np.int64)[inverse]


class MarginRanks:
    """The population's margin distribution per (model, predicted class, score band), decayed in event time."""

    def __init__(self, half_life_s: float = 6 * 3600.0, min_count: float = 200.0) -> None:
        self.half_life_s = half_life_s
        self.min_count = min_count
        self._models: dict[str, _ModelState] = {}

    def rank(self, model: str, labels: np.ndarray, scores: np.ndarray, margins: np.ndarray) -> np.ndarray:
        """Each event's rank in [0, 1] among the population's margins of its cell (NaN: not enough data)."""
        state = self._models.get(model)
        out = np.full(len(margins), np.nan)
        usable = np.isfinite(margins)
        if state is None or not usable.any() or not len(state.counts):
            return out
        label = state.codes(labels, grow=False)
        band = _bands(scores)
        position = np.where(usable, np.clip(margins, 0.0, 1.0), 0.0) * MARGIN_BINS  # NaN: no bin (not used)
        bin_ = np.minimum(position.astype(np.int64), MARGIN_BINS - 1)
        within = position - bin_
        c = state.counts
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
            mine = np.flatnonzero((chosen == level) & usable)
            if not len(mine):
                continue
            row = label[mine] if table.shape[0] > 1 else np.zeros(len(mine), np.int64)
            col = band[mine] if table.shape[1] > 1 else np.zeros(len(mine), np.int64)
            hist = table[row, col]
            below = np.cumsum(hist, axis=1)[np.arange(len(mine)), bin_[mine]] - hist[np.arange(len(mine)), bin_[mine]]
            inside = hist[np.arange(len(mine)), bin_[mine]] * within[mine]
            out[mine] = (below + inside) / hist.sum(axis=1)
        return out

    def update(self, model: str, labels: np.ndarray, scores: np.ndarray, margins: np.ndarray, ts: np.ndarray) -> None:
        """Add a batch (after ranking it), decaying the state to the batch's latest event time."""
        usable = np.isfinite(margins)
        if not usable.any():
            return
        state = self._models.setdefault(model, _ModelState())
        latest = float(ts[usable].max())
        if np.isfinite(state.ts) and latest > state.ts:
            state.counts *= 0.5 ** ((latest - state.ts) / self.half_life_s)
        state.ts = max(state.ts, latest)
        label = state.codes(labels[usable], grow=True)
        bin_ = np.minimum((np.clip(margins[usable], 0, 1) * MARGIN_BINS).astype(np.int64), MARGIN_BINS - 1)
        np.add.at(state.counts, (label, _bands(scores[usable]), bin_), 1.0)

    def merge(self, other: MarginRanks) -> None:
        """Add another estimator's counts (e.g. another ingest worker's), decayed to the later time."""
        for model, theirs in other._models.items():
            mine = self._models.setdefault(model, _ModelState())
            codes = mine.codes(np.array(list(theirs.labels), dtype=object), grow=True)
            latest = max(mine.ts, theirs.ts)
            for state in (mine, theirs):
                if np.isfinite(state.ts) and state.ts < latest:
                    state.counts = state.counts * 0.5 ** ((latest - state.ts) / self.half_life_s)
                    state.ts = latest
            mine.counts[codes] += theirs.counts[np.arange(len(codes))]
            mine.ts = latest


def _bands(scores: np.ndarray) -> np.ndarray:
    """Score band of each event; unscored events (NaN) share band 0."""
    return np.where(np.isfinite(scores), np.searchsorted(SCORE_BANDS, np.nan_to_num(scores, nan=-np.inf)), 0)
