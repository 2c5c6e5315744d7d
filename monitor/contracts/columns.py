"""Column-wise helpers for the contracts' columnar dataclasses (one numpy array per field, equal lengths): joining
them, coding a column of strings, and finding values in a sorted column.

>>> from dataclasses import dataclass
>>> import numpy as np
>>> @dataclass(frozen=True)
... class Pairs:
...     a: np.ndarray
...     b: np.ndarray
...     def __len__(self): return len(self.a)
...     @classmethod
...     def empty(cls): return cls(np.empty(0), np.empty(0))
>>> joined = concat_columns(Pairs, [Pairs(np.r_[1.0], np.r_[2.0]), Pairs.empty(), Pairs(np.r_[3.0], np.r_[4.0])])
>>> joined.a.tolist(), joined.b.tolist(), len(concat_columns(Pairs, []))
([1.0, 3.0], [2.0, 4.0], 0)
>>> factorize(np.array(["m2", "m1", "m2"], dtype=object))
(['m1', 'm2'], array([1, 0, 1]))
>>> [a.tolist() for a in sorted_positions(np.array([2, 5, 9]), np.array([5, 1, 9, 12]))]
[[1, 0, 2, 2], [True, False, True, False]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Protocol, TypeVar

import numpy as np


class _Columns(Protocol):
    def __len__(self) -> int: ...


T = TypeVar("T", bound=_Columns)


def factorize(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct strings of a column, sorted, and each row's index among them (``np.unique`` with
    ``return_inverse``). A column holding one value (a batch's model, mostly) is found in one comparison: sorting
    4,096 equal strings to learn that costs 20x more (0.5 ms against 27 us)."""
    if len(values) and bool((values == values[0]).all()):
        return [str(values[0])], np.zeros(len(values), np.int64)
    distinct, codes = np.unique(values.astype(str), return_inverse=True)
    return distinct.tolist(), codes.astype(np.int64).reshape(-1)


def sorted_positions(ordered: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``values`` is in ``ordered`` (sorted, distinct; clipped into its bounds where it is not there),
    and whether it is there at all."""
    if not len(ordered):
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return at, ordered[at] == values


def concat_columns(cls: Any, parts: Sequence[T]) -> T:
    """``parts`` joined field by field, empty ones skipped; ``cls.empty()`` when none has rows."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return cls.empty()
    return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))
