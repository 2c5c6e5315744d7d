"""Blacklight-style probabilistic fingerprints of raw inputs (Li et al., USENIX Security 2022).

Each query (a row of features scaled to ``[0, 1]``) becomes a set of ``top_s`` window hashes:
scale to 0..255, add a secret per-feature salt, mod 255, quantize to multiples of ``q``, slide a
window of ``w`` values (step 1), hash each window with a keyed hash, dedupe, keep the ``top_s``
largest. Two queries that share more than ``threshold`` hashes are near-duplicates: the signature
of black-box attacks, which probe the model with thousands of tiny variations of one input.

Everything is vectorized over a batch; the hash is a keyed multiply-add over the window followed
by the splitmix64 finalizer (secret keys stand in for Blacklight's salted SHA-256).

>>> import numpy as np
>>> fp = Fingerprinter.for_dimension(64, secret=b"doc")
>>> x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
>>> h = fp.hashes(np.vstack([x, x[:1] + 0.001]))
>>> h.shape, int(np.isin(h[2], h[0]).sum()) >= fp.threshold, int(np.isin(h[1], h[0]).sum()) < fp.threshold
((3, 30), True, True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a fast bijective 64-bit mixer (wrapping uint64 arithmetic)."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def _secret_rng(secret: bytes, purpose: bytes) -> np.random.Generator:
    seed = hashlib.sha256(purpose + b"\0" + secret).digest()
    return np.random.default_rng(int.from_bytes(seed[:16], "little"))


@dataclass(frozen=True)
class FingerprintParams:
    """Blacklight's parameters; ``for_dimension`` scales them to the input size."""

    window: int
    top_s: int
    threshold: int
    quantum: int = 50

    @classmethod
    def for_dimension(cls, dim: int) -> FingerprintParams:
        """Paper values for images (w=50, S=50, T=25), scaled down for tiny inputs (64 -> w=8, S=30, T=15).

        >>> FingerprintParams.for_dimension(64), FingerprintParams.for_dimension(784).window
        (FingerprintParams(window=8, top_s=30, threshold=15, quantum=50), 50)
        """
        if dim >= 3 * 1024:
            return cls(window=20, top_s=50, threshold=25)
        if dim >= 512:
            return cls(window=50, top_s=50, threshold=25)
        window = max(2, min(dim // 8, 50))
        windows = dim - window + 1
        top_s = max(2, min(50, windows // 2 + 2))
        return cls(window=window, top_s=top_s, threshold=top_s // 2)


class Fingerprinter:
    """Turns a matrix of queries into a matrix of ``top_s`` hashes per row (0 pads short rows)."""

    def __init__(self, dim: int, params: FingerprintParams, secret: bytes) -> None:
        if dim < params.window:
            raise ValueError(f"inputs of {dim} values are shorter than the window of {params.window}")
        self.dim = dim
        self.params = params
        rng = _secret_rng(secret, b"blacklight-salt")
        self._salt = rng.integers(0, 255, size=dim).astype(np.float32)
        self._keys = rng.integers(1, 2**63, size=params.window, dtype=np.uint64) | np.uint64(1)

    @classmethod
    def for_dimension(cls, dim: int, secret: bytes) -> Fingerprinter:
        return cls(dim, FingerprintParams.for_dimension(dim), secret)

    @property
    def threshold(self) -> int:
        return self.params.threshold

    def quantize(self, queries: np.ndarray) -> np.ndarray:
        """Scale ``[0, 1]`` inputs to 0..255, salt, mod 255, quantize to levels of ``quantum``."""
        scaled = np.clip(queries, 0.0, 1.0).astype(np.float32) * 255.0
        return (np.floor(np.mod(scaled + self._salt, 255.0) / self.params.quantum)).astype(np.uint64)

    def hashes(self, queries: np.ndarray) -> np.ndarray:
        """``(n, top_s)`` uint64 hashes, each row sorted descending with duplicates removed (0-padded)."""
        levels = self.quantize(queries)
        windows = np.lib.stride_tricks.sliding_window_view(levels, self.params.window, axis=1)
        with np.errstate(over="ignore"):
            keyed = (windows * self._keys).sum(axis=2, dtype=np.uint64)
        mixed = np.sort(splitmix64(keyed), axis=1)[:, ::-1]
        repeated = np.zeros_like(mixed, dtype=bool)
        repeated[:, 1:] = mixed[:, 1:] == mixed[:, :-1]
        mixed[repeated] = 0
        return np.sort(mixed, axis=1)[:, ::-1][:, : self.params.top_s].copy()


@dataclass(frozen=True)
class QueryMatches:
    """Per query of a batch: best match score, flag, and whether it was an exact repeat."""

    score: np.ndarray  # int32: most hashes shared with any earlier query
    flagged: np.ndarray  # bool: score >= threshold (exact repeats are never flagged)
    duplicate: np.ndarray  # bool: byte-identical to an earlier query (not indexed, not scored)
    exact_hash: np.ndarray  # uint64: content hash, for forensics and dedupe downstream


class _Run:
    """One sorted posting run: hashes ascending, query ids ascending within equal hashes."""

    __slots__ = ("hashes", "ids")

    def __init__(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.ids = ids[order]

    def __len__(self) -> int:
        return len(self.hashes)

    @classmethod
    def merge(cls, older: _Run, newer: _Run) -> _Run:
        return cls(np.concatenate([older.hashes, newer.hashes]), np.concatenate([older.ids, newer.ids]))


class _Generation:
    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.queries = 0
        self.runs: list[_Run] = []
        self.exact: set[int] = set()

    def add(self, run: _Run) -> None:
        """Log-structured insert: merge equal-sized runs so lookups touch O(log n) runs."""
        self.runs.append(run)
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            newer = self.runs.pop()
            self.runs[-1] = _Run.merge(self.runs[-1], newer)

    @property
    def postings(self) -> int:
        return sum(len(r) for r in self.runs)


class QueryIndex:
    """Inverted index hash -> query ids over all clients (Sybil attackers share one index).

    Memory is bounded by two rotating generations: a generation closes after
    ``generation_queries`` queries or ``generation_seconds`` of event time, and the one
    before it is then forgotten. Each hash looks at no more than its ``postings_cap`` most
    recent queries, which bounds the cost of hashes that every input shares (blank borders).

    >>> import numpy as np
    >>> fp = Fingerprinter.for_dimension(64, secret=b"doc")
    >>> index = QueryIndex(fp.threshold)
    >>> rng = np.random.default_rng(1)
    >>> base = rng.random(64, dtype=np.float32)
    >>> probes = np.clip(base + rng.normal(0, 0.005, (5, 64)), 0, 1).astype(np.float32)
    >>> queries = np.vstack([rng.random((3, 64), dtype=np.float32), probes, probes[:1]])
    >>> m = index.update(fp.hashes(queries), queries, now=0.0)
    >>> m.flagged.tolist(), m.duplicate.tolist()[-1]
    ([False, False, False, False, True, True, True, True, False], True)
    """

    def __init__(
        self,
        threshold: int,
        postings_cap: int = 64,
        generation_queries: int = 50_000,
        generation_seconds: float = 24 * 3600.0,
    ) -> None:
        self.threshold = threshold
        self.postings_cap = postings_cap
        self.generation_queries = generation_queries
        self.generation_seconds = generation_seconds
        self._generations: list[_Generation] = []
        self._next_id = 0

    @property
    def stored_queries(self) -> int:
        return sum(g.queries for g in self._generations)

    @property
    def memory_bytes(self) -> int:
        """Posting storage (hash + id per posting), the dominant cost."""
        return sum(g.postings for g in self._generations) * 16

    def update(self, hashes: np.ndarray, queries: np.ndarray, now: float) -> QueryMatches:
        """Score a batch against everything stored before it (and earlier rows of itself), then store it.

        A generation closes after exactly ``generation_queries`` stored queries, wherever batch
        boundaries fall, so results do not depend on how the stream was batched.
        """
        parts = []
        start = 0
        while True:
            current = self._current(now)
            stop = min(len(queries), start + max(1, self.generation_queries - current.queries))
            parts.append(self._update_part(hashes[start:stop], queries[start:stop], current))
            start = stop
            if start >= len(queries):
                break
        return QueryMatches(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in QueryMatches.__dataclass_fields__)
        )

    def _update_part(self, hashes: np.ndarray, queries: np.ndarray, current: _Generation) -> QueryMatches:
        exact = _content_hashes(queries)
        duplicate = self._mark_duplicates(exact, current)
        fresh = np.flatnonzero(~duplicate)
        ids = self._next_id + np.arange(len(fresh), dtype=np.int64)
        postings = _postings(hashes[fresh], ids)
        score = np.zeros(len(queries), dtype=np.int32)
        score[fresh] = self._score(postings, ids)
        if len(ids):
            current.add(postings)
            current.queries += len(ids)
        self._next_id += len(fresh)
        return QueryMatches(score, score >= self.threshold, duplicate, exact)

    def _current(self, now: float) -> _Generation:
        if not self._generations:
            self._generations.append(_Generation(now))
        head = self._generations[-1]
        if head.queries >= self.generation_queries or now - head.started_at >= self.generation_seconds:
            self._generations = [head, _Generation(now)]
        return self._generations[-1]

    def _mark_duplicates(self, exact: np.ndarray, current: _Generation) -> np.ndarray:
        duplicate = np.zeros(len(exact), dtype=bool)
        for row, value in enumerate(exact.tolist()):
            if any(value in g.exact for g in self._generations):
                duplicate[row] = True
            else:
                current.exact.add(value)
        return duplicate

    def _score(self, postings: _Run, ids: np.ndarray) -> np.ndarray:
        """Most hashes each new query shares with any earlier one (stored, or earlier in ``postings``)."""
        flat, owner = postings.hashes, postings.ids
        pairs = [self._pairs_in_run(run, flat, owner) for g in self._generations for run in g.runs]
        pairs.append(self._pairs_within(postings))
        new = np.concatenate([p[0] for p in pairs])
        old = np.concatenate([p[1] for p in pairs])
        best = np.zeros(len(ids), dtype=np.int32)
        if len(new):
            span = np.int64(ids[-1] + 1)
            keys = (new - ids[0]) * span + old  # (new query, earlier query) pairs, counted by runs once sorted:
            keys.sort()  # in place: np.unique's work without its copies
            change = np.empty(len(keys), bool)
            change[0] = True
            np.not_equal(keys[1:], keys[:-1], out=change[1:])
            starts = np.flatnonzero(change)
            counts = np.empty(len(starts), np.int32)
            counts[:-1] = starts[1:] - starts[:-1]
            counts[-1] = len(keys) - starts[-1]
            np.maximum.at(best, keys[starts] // span, counts)
        return best

    def _pairs_in_run(self, run: _Run, flat: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hi = np.searchsorted(run.hashes, flat, side="right")
        lo = np.maximum(np.searchsorted(run.hashes, flat, side="left"), hi - self.postings_cap)
        counts = hi - lo
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        positions = starts + np.arange(counts.sum())
        return np.repeat(owner, counts), run.ids[positions]

    def _pairs_within(self, postings: _Run) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of the batch's own queries sharing a hash; equal hashes are adjacent, older ids first."""
        hashes, ids = postings.hashes, postings.ids
        new, old = [], []
        for lag in range(1, min(self.postings_cap, len(hashes) - 1) + 1):
            same = hashes[lag:] == hashes[:-lag]
            if not same.any():
                break
            new.append(ids[lag:][same])
            old.append(ids[:-lag][same])
        empty = np.empty(0, dtype=np.int64)
        return (np.concatenate(new) if new else empty), (np.concatenate(old) if old else empty)


def _postings(hashes: np.ndarray, ids: np.ndarray) -> _Run:
    """The non-empty hashes of a block of queries as one sorted posting run (0 pads are dropped)."""
    flat = hashes.ravel()
    owner = np.repeat(ids, hashes.shape[1])
    keep = flat != 0
    return _Run(flat[keep], owner[keep])


def _content_hashes(queries: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact float32 bytes (exact-duplicate detection)."""
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in rows),
        dtype=np.uint64,
        count=len(rows),
    )
