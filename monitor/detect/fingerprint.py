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


def secret_rng(secret: bytes, purpose: bytes) -> np.random.Generator:
    """A generator seeded by the secret, per purpose (salts and hash keys an attacker cannot predict)."""
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
        """Paper values for images (w=50, S=50, T=25, q=50), scaled down for tiny inputs (64 -> w=8, S=30, T=15),
        which also get finer quantization (q=25): with Blacklight's 5 levels, 8x8 digits collide with each other
        (chosen on the digits-train-ref scenario family: benign own-history matches 9.4% -> 5.8%, the worst
        benign client's 26% -> 10%, HopSkipJump and Square still 91-92% matched; BENCHMARKS.md).

        >>> FingerprintParams.for_dimension(64), FingerprintParams.for_dimension(784).window
        (FingerprintParams(window=8, top_s=30, threshold=15, quantum=25), 50)
        """
        if dim >= 3 * 1024:
            return cls(window=20, top_s=50, threshold=25)
        if dim >= 512:
            return cls(window=50, top_s=50, threshold=25)
        window = max(2, min(dim // 8, 50))
        windows = dim - window + 1
        top_s = max(2, min(50, windows // 2 + 2))
        return cls(window=window, top_s=top_s, threshold=top_s // 2, quantum=25)


class Fingerprinter:
    """Turns a matrix of queries into a matrix of ``top_s`` hashes per row (0 pads short rows)."""

    def __init__(self, dim: int, params: FingerprintParams, secret: bytes) -> None:
        if dim < params.window:
            raise ValueError(f"inputs of {dim} values are shorter than the window of {params.window}")
        self.dim = dim
        self.params = params
        rng = secret_rng(secret, b"blacklight-salt")
        self._salt = rng.integers(0, 255, size=dim).astype(np.float32)
        self._keys = rng.integers(1, 2**63, size=params.window, dtype=np.uint64) | np.uint64(1)

    @classmethod
    def for_dimension(cls, dim: int, secret: bytes) -> Fingerprinter:
        return cls(dim, FingerprintParams.for_dimension(dim), secret)

    @property
    def threshold(self) -> int:
        return self.params.threshold

    def quantize(self, queries: np.ndarray, quantum: int | None = None) -> np.ndarray:
        """Scale ``[0, 1]`` inputs to 0..255, salt, mod 255, quantize to levels of ``quantum``."""
        scaled = np.clip(queries, 0.0, 1.0).astype(np.float32) * 255.0
        return (np.floor(np.mod(scaled + self._salt, 255.0) / (quantum or self.params.quantum))).astype(np.uint64)

    def _window_hashes(self, queries: np.ndarray, quantum: int | None = None) -> np.ndarray:
        levels = self.quantize(queries, quantum)
        windows = np.lib.stride_tricks.sliding_window_view(levels, self.params.window, axis=1)
        with np.errstate(over="ignore"):
            return splitmix64((windows * self._keys).sum(axis=2, dtype=np.uint64))

    def coarse_bins(self, queries: np.ndarray, bins: int) -> np.ndarray:
        """A coarse fingerprint per query, for query entropy: the largest window hash (a MinHash) at Blacklight's
        own quantization (q=50), so near-identical queries share a bin even where matching is finer."""
        return (self._window_hashes(queries, max(50, self.params.quantum)).max(axis=1) % np.uint64(bins)
                ).astype(np.int64)

    def hashes(self, queries: np.ndarray) -> np.ndarray:
        """``(n, top_s)`` uint64 hashes, each row sorted descending with duplicates removed (0-padded)."""
        mixed = np.sort(self._window_hashes(queries), axis=1)[:, ::-1]
        repeated = np.zeros_like(mixed, dtype=bool)
        repeated[:, 1:] = mixed[:, 1:] == mixed[:, :-1]
        mixed[repeated] = 0
        return np.sort(mixed, axis=1)[:, ::-1][:, : self.params.top_s].copy()


class ClientCodes:
    """Client ids as stable 64-bit codes for the index (a keyed-free BLAKE2 of the id), and back.

    >>> codes = ClientCodes()
    >>> c = codes.codes(np.array(["a", "b", "a"], dtype=object))
    >>> bool(c[0] == c[2] and c[0] != c[1]), codes.names(c[:2]).tolist()
    (True, ['a', 'b'])
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._names: dict[int, str] = {0: ""}

    def codes(self, clients: np.ndarray) -> np.ndarray:
        distinct, inverse = np.unique(clients.astype(str), return_inverse=True)
        if len(self._names) > self.limit:  # names of clients long gone: start over (codes stay the same)
            self._names = {0: ""}
        values = []
        for name in distinct.tolist():
            code = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1
            self._names[code] = name
            values.append(code)
        return np.asarray(values, np.uint64)[inverse]

    def names(self, codes: np.ndarray) -> np.ndarray:
        distinct, inverse = np.unique(np.asarray(codes, np.uint64), return_inverse=True)
        known = np.array([self._names.get(c, "") for c in distinct.tolist()], dtype=object)
        return known[inverse]


@dataclass(frozen=True)
class QueryMatches:
    """Per query of a batch: how many hashes it shares with the best earlier query (of anyone, of the same
    client, of another client), whether it was an exact repeat, and its content hash."""

    score: np.ndarray  # int32: most hashes shared with any earlier query
    own_score: np.ndarray  # int32: ... with an earlier query of the same client
    cross_score: np.ndarray  # int32: ... with an earlier query of another client
    matched_client: np.ndarray  # uint64: that other client's code (0: none)
    duplicate: np.ndarray  # bool: byte-identical to an earlier query (not indexed, not scored)
    exact_hash: np.ndarray  # uint64: content hash, for forensics and dedupe downstream
    threshold: int = 1

    @property
    def flagged(self) -> np.ndarray:
        """A near-duplicate of any earlier query (Blacklight: one index over all accounts)."""
        return self.score >= self.threshold

    @property
    def own_flagged(self) -> np.ndarray:
        """A near-duplicate of the client's own history (stateful detection, Chen et al.)."""
        return self.own_score >= self.threshold

    @property
    def cross_flagged(self) -> np.ndarray:
        """A near-duplicate of another client's query: an edge between the two clients."""
        return self.cross_score >= self.threshold

    @classmethod
    def concat(cls, parts: list[QueryMatches], threshold: int) -> QueryMatches:
        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(joined("score"), joined("own_score"), joined("cross_score"), joined("matched_client"),
                   joined("duplicate"), joined("exact_hash"), threshold)


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
    >>> probes = np.clip(base + rng.normal(0, 0.002, (5, 64)), 0, 1).astype(np.float32)
    >>> queries = np.vstack([rng.random((3, 64), dtype=np.float32), probes, probes[:1]])
    >>> m = index.update(fp.hashes(queries), content_hashes(queries), now=0.0)
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
        self._owners = np.empty(0, np.uint64)  # client code of every stored query, by id from _owner_base
        self._owner_base = 0

    @property
    def stored_queries(self) -> int:
        return sum(g.queries for g in self._generations)

    @property
    def memory_bytes(self) -> int:
        """Posting storage (hash + id per posting), the dominant cost, and each stored query's client."""
        return sum(g.postings for g in self._generations) * 16 + self._owners.nbytes

    def update(self, hashes: np.ndarray, exact: np.ndarray, now: float,
               clients: np.ndarray | None = None) -> QueryMatches:
        """Score a batch against everything stored before it (and earlier rows of itself), then store it.
        ``exact`` holds each query's content hash (``content_hashes``; exact repeats are not scored);
        ``clients`` (uint64 codes, one per query; default: all one client) tells own from cross matches.

        A generation closes after exactly ``generation_queries`` stored queries, wherever batch
        boundaries fall, so results do not depend on how the stream was batched.
        """
        clients = np.zeros(len(exact), np.uint64) if clients is None else np.asarray(clients, np.uint64)
        parts = []
        start = 0
        while True:
            current = self._current(now)
            stop = min(len(exact), start + max(1, self.generation_queries - current.queries))
            parts.append(self._update_part(hashes[start:stop], exact[start:stop], clients[start:stop], current))
            start = stop
            if start >= len(exact):
                break
        return QueryMatches.concat(parts, self.threshold)

    def _update_part(self, hashes: np.ndarray, exact: np.ndarray, clients: np.ndarray,
                     current: _Generation) -> QueryMatches:
        duplicate = self._mark_duplicates(exact, current)
        fresh = np.flatnonzero(~duplicate)
        ids = self._next_id + np.arange(len(fresh), dtype=np.int64)
        postings = _postings(hashes[fresh], ids)
        self._owners = np.concatenate([self._owners, clients[fresh]])  # before scoring: the batch's own rows count
        scores = np.zeros((3, len(exact)), dtype=np.int32)
        matched = np.zeros(len(exact), np.uint64)
        scores[:, fresh], matched[fresh] = self._score(postings, ids)
        if len(ids):
            current.add(postings)
            current.queries += len(ids)
        self._next_id += len(fresh)
        return QueryMatches(scores[0], scores[1], scores[2], matched, duplicate, exact, self.threshold)

    def _current(self, now: float) -> _Generation:
        if not self._generations:
            self._generations.append(_Generation(now))
        head = self._generations[-1]
        if head.queries >= self.generation_queries or now - head.started_at >= self.generation_seconds:
            if len(self._generations) > 1:  # the oldest is forgotten: so are its queries' clients
                dropped = self._generations[0].queries
                self._owners, self._owner_base = self._owners[dropped:], self._owner_base + dropped
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

    def _score(self, postings: _Run, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each new query: most hashes shared with any earlier query, with one of the same client, with
        one of another client (stored, or earlier in ``postings``), and that other client."""
        flat, owner = postings.hashes, postings.ids
        pairs = [self._pairs_in_run(run, flat, owner) for g in self._generations for run in g.runs]
        pairs.append(self._pairs_within(postings))
        new = np.concatenate([p[0] for p in pairs])
        old = np.concatenate([p[1] for p in pairs])
        best = np.zeros((3, len(ids)), dtype=np.int32)
        matched = np.zeros(len(ids), np.uint64)
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
            row, earlier = keys[starts] // span, keys[starts] % span
            other = self._owner_of(earlier)
            same = other == self._owner_of(ids[row])
            np.maximum.at(best[0], row, counts)
            np.maximum.at(best[1], row[same], counts[same])
            np.maximum.at(best[2], row[~same], counts[~same])
            cross = np.flatnonzero(~same)
            top = cross[np.lexsort((-counts[cross], row[cross]))]  # per row, its best cross match first
            first = np.r_[True, row[top][1:] != row[top][:-1]] if len(top) else np.empty(0, bool)
            matched[row[top[first]]] = other[top[first]]
        return best, matched

    def _owner_of(self, ids: np.ndarray) -> np.ndarray:
        return self._owners[ids - self._owner_base]

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


def content_hashes(queries: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact float32 bytes (exact-duplicate detection)."""
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in rows),
        dtype=np.uint64,
        count=len(rows),
    )
