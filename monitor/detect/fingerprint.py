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
import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np

from monitor.contracts.columns import sorted_positions

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
        """Scale ``[0, 1]`` inputs to 0..255, salt, mod 255, quantize to levels of ``quantum``. The salted values
        are below 510, so mod 255 is one exact subtraction where they reach 255 (5x faster than ``np.mod``)."""
        salted = np.clip(queries, 0.0, 1.0).astype(np.float32) * np.float32(255.0)
        salted += self._salt
        salted -= np.float32(255.0) * (salted >= 255.0)
        salted /= np.float32(quantum or self.params.quantum)
        return np.floor(salted, out=salted).astype(np.uint64)

    def _window_hashes(self, queries: np.ndarray, quantum: int | None = None) -> np.ndarray:
        """Each window's keyed sum, one window position at a time over the whole batch (2.5x faster than
        summing a (rows, windows, window) product), mixed."""
        levels = self.quantize(queries, quantum)
        count = levels.shape[1] - self.params.window + 1
        with np.errstate(over="ignore"):
            total = levels[:, :count] * self._keys[0]
            for position in range(1, self.params.window):
                total += levels[:, position:position + count] * self._keys[position]
            return splitmix64(total)

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
    own_score: np.ndarray  # int32: ... with an earlier query of the same client (0 below the threshold)
    cross_score: np.ndarray  # int32: ... with an earlier query of another client (0 below the threshold)
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


@dataclass(frozen=True)
class PairCounts:
    """Behind :class:`QueryMatches`: for each new query, every earlier query it shares a hash with (each hash
    counted with its ``postings_cap`` latest holders) and how many hashes, in (row, earlier id) order. Counts are
    sums over hashes, so an index that holds only some of the hashes counts its part of each pair, and the parts of
    disjoint sets of hashes add up to the whole (what an index sharded by hash reduces)."""

    row: np.ndarray  # int64: the new query's row in the input of :meth:`QueryIndex.update_with_pairs`
    earlier: np.ndarray  # int64: the earlier query's id in the index (its place among the queries stored)
    count: np.ndarray  # int32: hashes they share
    owner: np.ndarray  # uint64: the earlier query's client

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls) -> PairCounts:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.uint64))

    @classmethod
    def concat(cls, parts: list[PairCounts]) -> PairCounts:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


#: Queries scored at a time (:meth:`QueryIndex.update` cuts larger batches; results do not depend on it): their
#: pair keys fit 32 bits over up to 2**19 stored queries (two generations of the default 50,000 fit easily).
BLOCK_ROWS = 4096


class _Run:
    """One sorted posting run: hashes ascending, query ids ascending within equal hashes, and a one-hash Bloom
    filter of its hashes (8 to 16 bits a posting, beside the posting's 96) that spares the binary search of
    the needles it does not hold. On realistic traffic 80% of the needles are in no given run, and each search in a
    run of a million postings costs about 120 ns in cache misses; the filter check one memory read.

    A hash's slot in the filter is its bits below the top two, in order, so that sorted hashes (the run's, and the
    needles) touch it in a few ascending sweeps: 3x faster to build than by the low bits, and as selective (the
    ``top_s`` selection keeps the larger window hashes, so the top two bits hardly vary). The filter is built at a
    run's first search, so the runs merged away as soon as they are made never build one, and only for runs of
    ``filtered_from`` postings or more (a 512 KB array of hashes): a smaller one is searched in cache."""

    __slots__ = ("hashes", "ids", "_filter", "_shift", "_mask")
    filtered_from = 1 << 16

    def __init__(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        self.hashes = hashes  # sorted by the caller
        self.ids = ids
        self._filter: np.ndarray | None = None

    def may_hold(self, needles: np.ndarray) -> np.ndarray:
        """False where a needle is certainly not in the run (true for all that are, and a few that are not)."""
        if self._filter is None:
            self._filter = self._built_filter()
        slot = self._slots(needles)
        return ((self._filter[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1).astype(bool)

    def _built_filter(self) -> np.ndarray:
        bits = max(8 * len(self.hashes) - 1, 63).bit_length()  # 2**bits slots: at least 8 a posting
        self._shift, self._mask = np.uint64(62 - bits), np.uint64((1 << bits) - 1)
        marks = np.zeros(1 << bits, bool)
        marks[self._slots(self.hashes)] = True
        return np.packbits(marks, bitorder="little")

    def _slots(self, hashes: np.ndarray) -> np.ndarray:
        slots = np.right_shift(hashes, self._shift)
        slots &= self._mask
        return slots.view(np.int64)  # below 2**35: the same numbers

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.ids.nbytes + (0 if self._filter is None else self._filter.nbytes)

    def spans(self, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each of ``needles`` (sorted: searched in order, cache-friendly) has its postings, ``lo, hi``; an
        empty span ``0, 0`` where it has none.

        >>> run = _Run(np.array([3, 3, 5, 9], np.uint64), np.arange(4))
        >>> [a.tolist() for a in run.spans(np.array([1, 3, 5, 6, 9, 10], np.uint64))]
        [[0, 0, 2, 0, 3, 0], [0, 2, 3, 0, 4, 0]]
        """
        lo, hi = np.zeros(len(needles), np.int64), np.zeros(len(needles), np.int64)
        if not len(self):
            return lo, hi
        maybe = np.flatnonzero(self.may_hold(needles)) if len(self) >= self.filtered_from else np.arange(len(needles))
        at = np.searchsorted(self.hashes, needles[maybe], side="left")
        found = self.hashes[np.minimum(at, len(self.hashes) - 1)] == needles[maybe]
        lo[maybe[found]] = at[found]
        hi[maybe[found]] = np.searchsorted(self.hashes, needles[maybe[found]], side="right")
        return lo, hi

    def __len__(self) -> int:
        return len(self.hashes)

    @classmethod
    def merge(cls, older: _Run, newer: _Run) -> _Run:
        """One run of two, in linear time: each newer posting goes after the older ones with its hash. A stable sort
        of the two runs end to end, which numpy's timsort merges in one pass, is 2.5-3x faster than placing the newer
        postings by binary search for runs of alike size (as a generation's are merged), slower where the older run
        is over 30x longer (runs of 30,000 to 1.5 million postings, numpy 2.4)."""
        if len(older) > 30 * len(newer):
            return cls._placed(older, newer)
        hashes = np.concatenate([older.hashes, newer.hashes])
        order = np.argsort(hashes, kind="stable")
        return cls(hashes[order], np.concatenate([older.ids, newer.ids])[order])

    @classmethod
    def _placed(cls, older: _Run, newer: _Run) -> _Run:
        total = len(older) + len(newer)
        at = np.searchsorted(older.hashes, newer.hashes, side="right") + np.arange(len(newer))
        rest = np.ones(total, bool)
        rest[at] = False
        hashes, ids = np.empty(total, older.hashes.dtype), np.empty(total, older.ids.dtype)
        hashes[at], ids[at] = newer.hashes, newer.ids
        hashes[rest], ids[rest] = older.hashes, older.ids
        return cls(hashes, ids)


class _Generation:
    def __init__(self, started_at: float, opened_at: int, first_id: int) -> None:
        self.started_at = started_at
        self.opened_at = opened_at  # the position (queries passed to update before it) of the query that opened it
        self.first_id = first_id  # the id of its first stored query: its runs hold ids from it, as int32
        self.queries = 0
        self.runs: list[_Run] = []
        self.exact = np.empty(0, np.uint64)  # sorted content hashes of its queries

    def knows(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` are content hashes of this generation's queries."""
        return sorted_positions(self.exact, values)[1]

    def add(self, run: _Run) -> None:
        """Log-structured insert: merge equal-sized runs so lookups touch O(log n) runs."""
        self.runs.append(run)
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            self._merge_newest()

    def seal(self) -> None:
        """Closed: its runs merged into one, which every later lookup searches once instead of each of them (a run
        per power of two of blocks); the same postings in the same order."""
        while len(self.runs) > 1:
            self._merge_newest()

    def _merge_newest(self) -> None:
        newer = self.runs.pop()
        self.runs[-1] = _Run.merge(self.runs[-1], newer)

    @property
    def postings_bytes(self) -> int:
        return sum(r.nbytes for r in self.runs)


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
        if not 1 <= generation_queries < 2**31:
            raise ValueError(f"a generation holds 1 to 2**31 - 1 queries (32-bit ids), not {generation_queries}")
        self.generation_queries = generation_queries
        self.generation_seconds = generation_seconds
        self._generations: list[_Generation] = []
        self._next_id = 0
        self._position = 0  # queries passed to update so far, exact repeats included
        self._owners = np.empty(0, np.uint64)  # client code of every stored query, by id from _owner_base
        self._owner_base = 0
        self._latest = -math.inf  # the newest event time given to update
        self._forgot = False  # whether queries given before the oldest live generation were dropped

    @property
    def stored_queries(self) -> int:
        return sum(g.queries for g in self._generations)

    @property
    def position(self) -> int:
        """How many queries were passed to :meth:`update` so far, exact repeats included."""
        return self._position

    @property
    def generation_openings(self) -> list[int]:
        """The position of the query that opened each live generation, the oldest first: what the index
        holds is decided by the queries from the first of these on (a restart rebuilds it from them)."""
        return [g.opened_at for g in self._generations]

    @property
    def generation_ids(self) -> list[int]:
        """The id of the first query each live generation stored (or will store), the oldest first."""
        return [g.first_id for g in self._generations]

    @property
    def oldest_id(self) -> int:
        """The id of the first query the live generations stored (ids count stored queries, repeats not)."""
        return self._owner_base

    def starting_at(self, position: int, first_id: int) -> QueryIndex:
        """This empty index, numbering the queries it is given from ``position`` and those it stores from
        ``first_id``: the index rebuilt from the query that opened another's oldest live generation."""
        if self._position or self._generations:
            raise ValueError("only an empty index can start at another position")
        self._position, self._next_id, self._owner_base = position, first_id, first_id
        self._forgot = position > 0
        return self

    def continuing(self) -> QueryIndex:
        """This index, rebuilt from the opening of another's oldest live generation where that one had forgotten
        earlier queries: its :attr:`lookback_s` is then finite, as the other's."""
        self._forgot = True
        return self

    @property
    def lookback_s(self) -> float:
        """Event time from the opening of the oldest live generation to the newest query: how far back a new
        query is matched now (between one and two generations' spans, as generations turn over); ``inf`` while
        the index still holds every query it was given, and in a rebuilt index before its first query.

        >>> index = QueryIndex(threshold=2, generation_queries=2)
        >>> hashes, exact = np.arange(1, 7, dtype=np.uint64).reshape(3, 2), np.arange(1, 4, dtype=np.uint64)
        >>> index.update(hashes, exact, now=np.array([0.0, 30.0, 60.0])).flagged.tolist(), index.lookback_s
        ([False, False, False], inf)
        >>> _ = index.update(hashes + 6, exact + 3, now=np.array([90.0, 120.0, 150.0])); index.lookback_s
        90.0
        """
        if not (self._forgot and self._generations):
            return math.inf
        return max(0.0, self._latest - self._generations[0].started_at)

    @property
    def memory_bytes(self) -> int:
        """Posting storage (a 64-bit hash and a 32-bit id per posting), the dominant cost, each stored query's client
        and content hash."""
        return (sum(g.postings_bytes for g in self._generations) + self._owners.nbytes
                + sum(g.exact.nbytes for g in self._generations))

    def update(self, hashes: np.ndarray, exact: np.ndarray, now: float | np.ndarray,
               clients: np.ndarray | None = None) -> QueryMatches:
        """Score a batch against everything stored before it (and earlier rows of itself), then store it
        (:meth:`update_with_pairs` without the pairs).
        ``exact`` holds each query's content hash (``content_hashes``; exact repeats are not scored);
        ``now`` the event time (one for the batch, or one per query); ``clients`` (uint64 codes, one per query;
        default: all one client) tells own from cross matches.

        A generation closes after exactly ``generation_queries`` stored queries, or at the first query
        ``generation_seconds`` after it opened, and each hash looks at its ``postings_cap`` most recent
        earlier queries however they are stored, so results do not depend on how the stream was batched.
        """
        return self._update(hashes, exact, now, clients, False)[0]

    def update_with_pairs(self, hashes: np.ndarray, exact: np.ndarray, now: float | np.ndarray,
                          clients: np.ndarray | None = None) -> tuple[QueryMatches, PairCounts]:
        """:meth:`update`, and the per-pair counts its verdicts were taken from."""
        return self._update(hashes, exact, now, clients, True)

    def _update(self, hashes: np.ndarray, exact: np.ndarray, now: float | np.ndarray, clients: np.ndarray | None,
                with_pairs: bool) -> tuple[QueryMatches, PairCounts]:
        clients = np.zeros(len(exact), np.uint64) if clients is None else np.asarray(clients, np.uint64)
        times = np.broadcast_to(np.asarray(now, np.float64), (len(exact),))
        parts, pairs = [], []
        start = 0
        while True:
            current = self._current(float(times[start]) if len(times) else float(np.max(now, initial=-np.inf)))
            stop = min(len(exact), start + BLOCK_ROWS, start + max(1, self.generation_queries - current.queries))
            late = np.flatnonzero(times[start + 1:stop] - current.started_at >= self.generation_seconds)
            stop = start + 1 + int(late[0]) if len(late) else stop
            matches, counted = self._update_part(hashes[start:stop], exact[start:stop], clients[start:stop], current,
                                                 with_pairs)
            parts.append(matches)
            pairs.append(replace(counted, row=counted.row + start))
            self._position += stop - start
            self._latest = max(self._latest, float(times[start:stop].max()))
            start = stop
            if start >= len(exact):
                break
        return QueryMatches.concat(parts, self.threshold), PairCounts.concat(pairs)

    def _update_part(self, hashes: np.ndarray, exact: np.ndarray, clients: np.ndarray, current: _Generation,
                     with_pairs: bool) -> tuple[QueryMatches, PairCounts]:
        duplicate = self._mark_duplicates(exact, current)
        fresh = np.flatnonzero(~duplicate)
        ids = self._next_id + np.arange(len(fresh), dtype=np.int64)
        probe = _Probe.of(hashes[fresh], ids)
        postings = probe.run()
        self._owners = np.concatenate([self._owners, clients[fresh]])  # before scoring: the batch's own rows count
        scores = np.zeros((3, len(exact)), dtype=np.int32)
        matched = np.zeros(len(exact), np.uint64)
        scores[:, fresh], matched[fresh], counted = self._score(probe, postings, ids, with_pairs)
        if len(ids):
            current.add(_Run(postings.hashes, (postings.ids - current.first_id).astype(np.int32)))
            current.queries += len(ids)
        self._next_id += len(fresh)
        return (QueryMatches(scores[0], scores[1], scores[2], matched, duplicate, exact, self.threshold),
                replace(counted, row=fresh[counted.row]))

    def _current(self, now: float) -> _Generation:
        if not self._generations:
            self._generations.append(_Generation(now, self._position, self._next_id))
        head = self._generations[-1]
        if head.queries >= self.generation_queries or now - head.started_at >= self.generation_seconds:
            if len(self._generations) > 1:  # the oldest is forgotten: so are its queries' clients
                dropped = self._generations[0].queries
                self._owners, self._owner_base = self._owners[dropped:], self._owner_base + dropped
                self._forgot = True
            head.seal()
            self._generations = [head, _Generation(now, self._position, self._next_id)]
        return self._generations[-1]

    def _mark_duplicates(self, exact: np.ndarray, current: _Generation) -> np.ndarray:
        """Exact repeats: of a query of a live generation, or of an earlier row of the batch."""
        duplicate = np.ones(len(exact), dtype=bool)
        duplicate[np.unique(exact, return_index=True)[1]] = False
        for generation in self._generations:
            duplicate |= generation.knows(exact)
        current.exact = _insert_sorted(current.exact, np.sort(exact[~duplicate]))
        return duplicate

    def _score(self, probe: _Probe, postings: _Run, ids: np.ndarray,
               with_pairs: bool = False) -> tuple[np.ndarray, np.ndarray, PairCounts]:
        """For each new query: most hashes shared with any earlier query, with one of the same client, with
        one of another client (stored, or earlier in ``postings``), and that other client; and, ``with_pairs``,
        every pair (rows of ``ids``), with the earlier query's client read now, before a later block of the same
        update may forget its generation."""
        best = np.zeros((3, len(ids)), dtype=np.int32)
        matched = np.zeros(len(ids), np.uint64)
        if not len(ids):
            return best, matched, PairCounts.empty()
        keys = _PairKeys.of_block(ids, self._owner_base)
        within, room = self._pairs_within(probe, postings, keys)
        pairs = [within]
        needles, slots = _distinct_sorted(postings.hashes, probe.order)
        owners = {g.first_id: keys.owners(probe.ids, g.first_id) for g in self._generations}  # once per generation
        for generation, run in [(g, run) for g in reversed(self._generations) for run in reversed(g.runs)]:
            if not room.any():  # (the newest first)
                break
            pairs.append(self._pairs_in_run(run, needles, slots, room, owners[generation.first_id], keys))
        distinct, counts = _distinct_counts(pairs)
        row, earlier = keys.split(distinct)
        counted = PairCounts(row, earlier, counts, self._owner_of(earlier)) if with_pairs else PairCounts.empty()
        np.maximum.at(best[0], row, counts)
        near = counts >= self.threshold  # whose query it was matters only for near-duplicates
        row, earlier, counts = row[near], earlier[near], counts[near]
        other = self._owner_of(earlier)
        best[1], best[2], matched = near_pair_verdicts(len(ids), row, earlier, counts, other,
                                                       self._owner_of(ids[row]))
        return best, matched, counted

    def _owner_of(self, ids: np.ndarray) -> np.ndarray:
        return self._owners[ids - self._owner_base]

    def _pairs_in_run(self, run: _Run, needles: np.ndarray, slots: np.ndarray, room: np.ndarray,
                      owners: np.ndarray, keys: _PairKeys) -> np.ndarray:
        """The pair key (``owners``: of each probe hash's new query) of (new query, stored query) for every hash
        they share: the latest stored queries of each hash, as many as its ``room`` (what newer queries left of
        ``postings_cap``, used up here). ``needles`` are the probe's distinct hashes, ascending (searched once
        each, in order: cache-friendly), ``slots`` each probe hash's index among them; ``room``, ``slots`` and
        ``owners`` are in the probe's order."""
        lo, hi = (bound[slots] for bound in run.spans(needles))
        start = np.maximum(lo, hi - room)
        room -= hi - start
        return _pairs(keys.ids(run.ids), start, hi, owners)

    def _pairs_within(self, probe: _Probe, postings: _Run, keys: _PairKeys) -> tuple[np.ndarray, np.ndarray]:
        """The same among the block's own queries: each with the ``postings_cap`` latest earlier queries of the
        block that share a hash (``postings`` is the probe sorted: equal hashes adjacent, older ids first); and
        the room each hash has left for stored queries."""
        n = len(postings)
        change = np.ones(n, bool)
        np.not_equal(postings.hashes[1:], postings.hashes[:-1], out=change[1:])
        first_of_hash = np.maximum.accumulate(np.where(change, np.arange(n), 0))
        position = np.empty(n, np.int64)
        position[probe.order] = np.arange(n)
        start = np.maximum(first_of_hash[position], position - self.postings_cap)
        pairs = _pairs(keys.ids(postings.ids), start, position, keys.owners(probe.ids))
        return pairs, self.postings_cap - (position - start)


def near_pair_verdicts(n: int, row: np.ndarray, earlier: np.ndarray, count: np.ndarray, other: np.ndarray,
                       mine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the near-duplicate pairs of ``n`` new queries (the new query's row, the earlier query's id, the hashes
    they share, the earlier query's client, the new query's): per query the best count with a query of its own
    client, with one of another client, and that other client (of the best cross pair; among equals, the earliest
    query's). One index decides this way, and the sharded matcher's reduce with it.

    >>> near_pair_verdicts(2, np.array([0, 0, 1]), np.array([7, 3, 5]), np.array([16, 16, 20]),
    ...                    np.array([9, 8, 4], np.uint64), np.array([1, 1, 4], np.uint64))
    (array([ 0, 20], dtype=int32), array([16,  0], dtype=int32), array([8, 0], dtype=uint64))
    """
    same = other == mine
    own, cross = np.zeros(n, np.int32), np.zeros(n, np.int32)
    np.maximum.at(own, row[same], count[same])
    np.maximum.at(cross, row[~same], count[~same])
    matched = np.zeros(n, np.uint64)
    pick = np.flatnonzero(~same)
    pick = pick[np.lexsort((earlier[pick], -count[pick], row[pick]))]  # per row, its best cross match first
    first = np.r_[True, row[pick][1:] != row[pick][:-1]] if len(pick) else np.empty(0, bool)
    matched[row[pick[first]]] = other[pick[first]]
    return own, cross, matched


def _insert_sorted(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``ordered`` with ``values`` (sorted) inserted in order, in linear time: a generation's content hashes grow by
    each batch's new ones (``np.union1d`` hashes and sorts the whole of them every time: 6 ms a batch at 50,000).

    >>> _insert_sorted(np.array([2, 5, 9], np.uint64), np.array([1, 6, 7], np.uint64)).tolist()
    [1, 2, 5, 6, 7, 9]
    """
    return np.insert(ordered, np.searchsorted(ordered, values), values)


def _distinct_sorted(ordered: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``ordered`` (sorted, ``order`` the permutation that sorted them), and the index among
    them of each value in the unsorted order.

    >>> [a.tolist() for a in _distinct_sorted(np.array([2, 5, 5, 8]), np.array([3, 0, 2, 1]))]
    [[2, 5, 8], [1, 2, 1, 0]]
    """
    change = np.ones(len(ordered), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
    slots = np.empty(len(ordered), np.int64)
    slots[order] = np.cumsum(change) - 1
    return ordered[change], slots


@dataclass(frozen=True)
class _PairKeys:
    """(new query, earlier query) pairs of a block as one integer each: the new query's row in the block above the
    bits of the earlier query's id counted from the oldest stored one, so that one sort groups and counts them.
    Where they fit, keys are 32-bit (a block of :data:`BLOCK_ROWS` rows over two default generations does), which
    numpy sorts 3.4x faster than 64-bit ones (1.3M keys: 8.4 ms against 28.6, numpy 2.4, AVX-512); ids are then
    added modulo 2**32, which gives the exact key because every key is below it.

    >>> keys = _PairKeys.of_block(np.array([10, 11, 12]), base=4)
    >>> owners = keys.owners(np.array([10, 12]))
    >>> keys.dtype, [a.tolist() for a in keys.split(owners + keys.ids(np.array([5, 11])))]
    (dtype('uint32'), [[0, 2], [5, 11]])
    """

    first: int  # the id of the block's first new query: row 0
    base: int  # the id of the oldest stored query
    shift: int  # bits of an earlier id counted from ``base``
    dtype: np.dtype  # uint32 where every key fits 32 bits, else int64

    @classmethod
    def of_block(cls, ids: np.ndarray, base: int) -> _PairKeys:
        """Keys for the block of new queries ``ids`` (consecutive) over stored queries from id ``base``."""
        shift = max(int(ids[-1]) - base, 1).bit_length()
        bits = shift + len(ids).bit_length()
        if bits > 63:
            raise ValueError(f"{len(ids)} new queries over {int(ids[-1]) - base} stored do not fit one 64-bit key")
        return cls(int(ids[0]), base, shift, np.dtype(np.uint32 if bits <= 32 else np.int64))

    def owners(self, new_ids: np.ndarray, offset: int = 0) -> np.ndarray:
        """Each new query's part of a key: add an earlier query's id (less ``offset``, as :meth:`ids`) to make their
        pair's key."""
        return (((new_ids - self.first) << self.shift) - self.base + offset).astype(self.dtype)

    def ids(self, ids: np.ndarray) -> np.ndarray:
        """Earlier queries' ids (non-negative) in the keys' type, to add to :meth:`owners` (modulo 2**32 in 32 bits:
        a run's 32-bit ids are viewed, not copied)."""
        if self.dtype != np.uint32:
            return ids  # int32 or int64: added to int64 owners, int64
        return ids.view(np.uint32) if ids.dtype == np.int32 else ids.astype(np.uint32)

    def split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The new query's row and the earlier query's id of each key."""
        keys = keys.astype(np.int64, copy=False)
        return keys >> self.shift, (keys & ((1 << self.shift) - 1)) + self.base


def _pairs(ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """``owners[i] + ids[j]`` for every j in [lo[i], hi[i]), in the order of i."""
    counts = hi - lo
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    return np.repeat(owners, counts) + ids[starts + np.arange(counts.sum())]


def _distinct_counts(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct value of ``parts`` in ascending order, and how many times it occurs. Pairs packed as
    :class:`_PairKeys` are counted by one vectorized sort: 29 ms against 38 ms for sorting each row's pairs in
    matrices of rows of alike size (1.3M pairs of a batch of the realistic records of ``bench/``, numpy 2.4).

    >>> [a.tolist() for a in _distinct_counts([np.array([7, 3, 7]), np.array([3, 9])])]
    [[3, 7, 9], [2, 2, 1]]
    """
    values = np.sort(np.concatenate(parts))
    change = np.ones(len(values), bool)
    np.not_equal(values[1:], values[:-1], out=change[1:])
    begins = np.flatnonzero(change)
    return values[begins], np.diff(np.append(begins, len(values))).astype(np.int32)


@dataclass(frozen=True)
class _Probe:
    """The non-empty hashes of a block of new queries in query order (0 pads dropped), and the order that
    sorts them."""

    hashes: np.ndarray
    ids: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, hashes: np.ndarray, ids: np.ndarray) -> _Probe:
        flat = hashes.ravel()
        owner = np.repeat(ids, hashes.shape[1])
        keep = flat != 0
        return cls(flat[keep], owner[keep], stable_order(flat[keep]))

    def run(self) -> _Run:
        """The block as one sorted posting run."""
        return _Run(self.hashes[self.order], self.ids[self.order])


def stable_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")``, 2.5-3.7x faster on a block's probe hashes (123,000 uint64 values,
    numpy 2.4, AVX-512): numpy's vectorized unstable argsort, then equal values put back in their input order by
    one vectorized sort of (run of equal values, position) packed in an integer.

    >>> stable_order(np.array([5, 3, 5, 3, 9, 5], np.uint64)).tolist()
    [1, 3, 0, 2, 5, 4]
    """
    order = np.argsort(values)
    if len(values) < 2:
        return order
    ordered = values[order]
    change = np.empty(len(values), bool)
    change[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
    shift = (len(values) - 1).bit_length()
    keys = (np.cumsum(change, dtype=np.int64) << shift) | order
    keys.sort()
    return keys & ((1 << shift) - 1)


def content_hashes(queries: np.ndarray, secret: bytes = b"") -> np.ndarray:
    """A keyed 64-bit hash of each row's exact float32 bytes (exact-duplicate detection), vectorized: every
    32-bit word is multiplied by its own secret odd key, mixed (splitmix64) and summed, so an attacker who
    does not know the secret cannot make two different queries collide on purpose.

    >>> x = np.array([[0.5, 1.0], [0.5, 1.0], [1.0, 0.5]], np.float32)
    >>> a, b, c = content_hashes(x, b"doc").tolist(); a == b != c, a != int(content_hashes(x, b"other")[0])
    (True, True)
    """
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    multipliers, offsets = _content_keys(secret, rows.shape[1])
    with np.errstate(over="ignore"):
        mixed = splitmix64(rows.view(np.uint32).astype(np.uint64) * multipliers + offsets)
        return splitmix64(mixed.sum(axis=1, dtype=np.uint64))


@lru_cache(maxsize=64)
def _content_keys(secret: bytes, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = secret_rng(secret, b"content-hash")
    return (rng.integers(1, 2**63, size=width, dtype=np.uint64) | np.uint64(1),
            rng.integers(0, 2**63, size=width, dtype=np.uint64))
