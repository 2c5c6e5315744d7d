"""A batch's vectors as float32 matrices grouped by length, built in one numpy call per group, and the checks
the validator's types cannot make (binary embeddings that hold a whole number of finite values), made per batch.

>>> groups = list_groups([[1, 2], None, [3, 4, 5], [6, 7]])
>>> {size: (rows.tolist(), matrix.tolist()) for size, (rows, matrix) in groups.items()}
{2: ([0, 3], [[1.0, 2.0], [6.0, 7.0]]), 3: ([2], [[3.0, 4.0, 5.0]])}
>>> raw = [b"\\0\\0\\x80?\\0\\0\\0@", b"\\0\\0\\x80", b"\\0\\0\\x80\\x7f"]
>>> groups, rejected = encoded_groups([0, 2, 3], raw, ["float32"] * 3)
>>> groups[2][0].tolist(), groups[2][1].tolist(), rejected
([0], [[1.0, 2.0]], {2: 'input.embedding.b64: 3 bytes, not a whole number of float32 values', \
3: 'input.embedding: must contain only finite numbers'})
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import chain, starmap

import numpy as np

#: ``{length: (rows, matrix float32)}``: the rows of a batch that carry a vector of that length.
Groups = dict[int, tuple[np.ndarray, np.ndarray]]

_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
_F32_MAX = float(np.finfo(np.float32).max)


def list_groups(vectors: Sequence[list[float] | None]) -> Groups:
    """Validated number lists (``None`` where absent) grouped by length. Finite numbers beyond float32's range
    are clipped to it (the fingerprint quantization clips them anyway)."""
    present = [i for i, v in enumerate(vectors) if v is not None]
    if not present:
        return {}
    rows = np.asarray(present, np.int64)
    items: list[list[float]] = [vectors[i] for i in present]  # type: ignore[misc]  # None filtered above
    lengths = np.fromiter(map(len, items), np.int64, len(items))
    groups: Groups = {}
    for size in np.unique(lengths).tolist():
        mine = np.flatnonzero(lengths == size)
        chosen = items if len(mine) == len(items) else [items[i] for i in mine.tolist()]
        groups[size] = (rows[mine], _as_float32(chosen, size))
    return groups


def _as_float32(items: list, size: int) -> np.ndarray:
    """Equal-length lists as one float32 matrix: each packed by one compiled ``struct`` call (twice as fast as
    ``np.fromiter``, three times ``np.array``), or, where a value is beyond float32's range, clipped to it."""
    try:
        return np.frombuffer(bytearray().join(starmap(_float32_packer(size), items)), np.float32).reshape(-1, size)
    except (OverflowError, struct.error):
        matrix = np.fromiter(chain.from_iterable(items), np.float64, count=len(items) * size).reshape(-1, size)
        return np.clip(matrix, -_F32_MAX, _F32_MAX).astype(np.float32)


@lru_cache(maxsize=256)
def _float32_packer(size: int) -> Callable[..., bytes]:
    return struct.Struct(f"<{size}f").pack


def encoded_groups(rows: Sequence[int], decoded: Sequence[bytes], dtypes: Sequence[str]
                   ) -> tuple[Groups, dict[int, str]]:
    """Binary embeddings (of the batch ``rows``: their bytes, base64 already decoded by the validator, and dtype
    names) grouped by dimension; the rows that do not hold a whole number of finite values, with the reason.
    Grouped by (byte length, dtype) in numpy: one group, one join, in the common case."""
    if not len(rows):
        return {}, {}
    at = np.asarray(rows, np.int64)
    half = np.array(dtypes) == "float16" if "float16" in dtypes else np.zeros(len(at), bool)
    kinds = np.fromiter(map(len, decoded), np.int64, len(decoded)) * 2 + half
    groups: Groups = {}
    rejected: dict[int, str] = {}
    for kind in np.unique(kinds).tolist():
        mine = np.flatnonzero(kinds == kind)
        size, name = kind >> 1, "float16" if kind & 1 else "float32"
        dtype = _DTYPES[name]
        if size % dtype.itemsize:
            rejected.update(dict.fromkeys(at[mine].tolist(),
                                          f"input.embedding.b64: {size} bytes, not a whole number of {name} values"))
            continue
        chosen = decoded if len(mine) == len(decoded) else [decoded[i] for i in mine.tolist()]
        matrix = np.frombuffer(b"".join(chosen), dtype).reshape(len(mine), -1).astype(np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        rejected.update(dict.fromkeys(at[mine[~finite]].tolist(), "input.embedding: must contain only finite numbers"))
        groups = merge_groups(groups, {matrix.shape[1]: (at[mine[finite]], matrix[finite])})
    return groups, rejected


def concat_groups(parts: Sequence[Groups], starts: Sequence[int]) -> Groups:
    """The groups of consecutive batches (``starts``: each batch's first row in the joined one), as one.

    >>> concat_groups([{2: (np.array([1]), np.ones((1, 2)))}, {2: (np.array([0]), np.zeros((1, 2)))}], [0, 3])[2][0]
    array([1, 3])
    """
    sizes = sorted({size for groups in parts for size in groups})
    out: Groups = {}
    for size in sizes:
        mine = [(groups[size], start) for groups, start in zip(parts, starts, strict=True) if size in groups]
        out[size] = (np.concatenate([rows + start for (rows, _), start in mine]),
                     np.concatenate([matrix for (_, matrix), _ in mine]))
    return out


def merge_groups(a: Groups, b: Groups) -> Groups:
    """Two groupings of one batch's rows (disjoint rows) as one, rows in batch order."""
    out = dict(a)
    for size, (rows, matrix) in b.items():
        if size in out:
            rows = np.concatenate([out[size][0], rows])
            matrix = np.concatenate([out[size][1], matrix])
            order = np.argsort(rows, kind="stable")
            rows, matrix = rows[order], matrix[order]
        out[size] = (rows, matrix)
    return out


def take_groups(groups: Groups, rows: np.ndarray, n: int) -> Groups:
    """The groups of the sub-batch made of ``rows`` (indices into a batch of ``n`` rows, in order)."""
    position = np.full(n, -1, np.int64)
    position[rows] = np.arange(len(rows))
    out: Groups = {}
    for size, (mine, matrix) in groups.items():
        kept = position[mine] >= 0
        if kept.any():
            out[size] = (position[mine[kept]], matrix[kept])
    return out
