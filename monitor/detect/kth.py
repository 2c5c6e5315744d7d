"""The k-th largest value of each row, exactly, 1.2-1.7x faster than ``np.partition`` on wide rows (the kNN score's
similarities to 1,796 reference embeddings, measured on the realistic records of ``bench/``).

An eighth of each row's columns gives a threshold that most rows exceed at least ``k`` times; only the values at
or above it are selected. Rows where that fails (about one in ten) are selected in full.

>>> rows = np.array([[0.1, 0.9, 0.4, 0.7], [0.5, 0.2, 0.8, 0.3]], np.float32)
>>> kth_largest(rows, 2).tolist()
[0.699999988079071, 0.5]
"""

from __future__ import annotations

import numpy as np

#: Below this many columns a plain partition is as fast.
MIN_COLUMNS = 256
#: The sample is 1 / SAMPLE of the columns; its threshold aims at AIM x k values above it (checked, not assumed).
SAMPLE = 8
AIM = 1.2


def kth_largest(rows: np.ndarray, k: int) -> np.ndarray:
    """``np.partition(rows, n - k, axis=1)[:, n - k]`` for a 2-d array of finite values whose columns are in no
    particular order (the sample is the first columns), ``1 <= k <= n``."""
    n = rows.shape[1]
    if n < MIN_COLUMNS or not len(rows):
        return _partition(rows, k)
    width = n // SAMPLE
    sample_k = min(width, int(np.ceil(AIM * k / SAMPLE)) + 2)
    threshold = np.partition(rows[:, :width], width - sample_k, axis=1)[:, width - sample_k]
    above = rows >= threshold[:, None]
    counts = above.sum(axis=1)
    enough = counts >= k
    out = np.empty(len(rows), rows.dtype)
    if enough.any():
        out[enough] = _partition(_packed(rows[enough], above[enough], counts[enough]), k)
    if not enough.all():
        out[~enough] = _partition(rows[~enough], k)
    return out


def _packed(rows: np.ndarray, above: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each row's selected values, left-aligned in a matrix as wide as the largest count, padded with -inf."""
    values = rows[above]
    starts = np.cumsum(counts) - counts
    packed = np.full((len(rows), int(counts.max())), -np.inf, rows.dtype)
    packed[np.repeat(np.arange(len(rows)), counts), np.arange(len(values)) - np.repeat(starts, counts)] = values
    return packed


def _partition(rows: np.ndarray, k: int) -> np.ndarray:
    n = rows.shape[1]
    return np.partition(rows, n - k, axis=1)[:, n - k]
