"""Keyed MinHash fingerprints of text queries (Broder 1997), for the same query index as raw numeric inputs:
a word-substitution attacker changing one word per query, or paraphrase probing, sends near-duplicates.

Each text becomes a set of shingles (word bigrams and character 5-grams of the lower-cased, whitespace-
normalized text); ``top_s`` keyed hash functions (a secret per function, splitmix64 over each shingle's
CRC-32) each keep their minimum over the set. Two texts agree on a function's minimum with probability
equal to their Jaccard similarity, so sharing ``threshold = top_s / 2`` values means a similarity of about
one half or more. The i-th minimum is mixed with i, so the values of different functions never collide,
and rows come out sorted descending like :meth:`Fingerprinter.hashes`.

>>> fp = TextFingerprinter(secret=b"doc")
>>> h = fp.hashes(["my package is late again please help", "my parcel is late again please help",
...                "i cannot reset my password"])
>>> h.shape, int(np.isin(h[1], h[0]).sum()) >= fp.threshold, int(np.isin(h[2], h[0]).sum()) < fp.threshold
((3, 32), True, True)
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from monitor.detect.fingerprint import secret_rng, splitmix64

_SPACES = re.compile(r"\s+")


def shingles(text: str, chars: int = 5) -> set[str]:
    """Word bigrams (and the words of one-word texts) and character ``chars``-grams of the normalized text."""
    normal = _SPACES.sub(" ", text.lower()).strip()
    words = normal.split(" ") if normal else []
    out = {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)} or set(words)
    out |= {normal[i:i + chars] for i in range(max(1, len(normal) - chars + 1))} if normal else set()
    return out


class TextFingerprinter:
    """Texts -> ``(n, top_s)`` uint64 MinHash values, rows sorted descending (empty texts: all 0)."""

    def __init__(self, secret: bytes, top_s: int = 32) -> None:
        self.top_s = top_s
        self.threshold = top_s // 2
        rng = secret_rng(secret, b"text-minhash")
        self._keys = rng.integers(1, 2**63, size=top_s, dtype=np.uint64)

    def hashes(self, texts: Sequence[str]) -> np.ndarray:
        sets = [shingles(t) for t in texts]
        sizes = np.array([len(s) for s in sets], np.int64)
        codes = np.fromiter((zlib.crc32(s.encode()) for group in sets for s in group), np.uint64, count=sizes.sum())
        out = np.zeros((len(texts), self.top_s), np.uint64)
        filled = np.flatnonzero(sizes)
        if len(filled):
            keyed = splitmix64(codes[:, None] ^ self._keys[None, :])
            starts = np.r_[0, np.cumsum(sizes)[:-1]][filled]
            minima = np.minimum.reduceat(keyed, starts, axis=0)
            with np.errstate(over="ignore"):
                mixed = splitmix64(minima + np.arange(self.top_s, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            out[filled] = np.sort(mixed, axis=1)[:, ::-1]
        return out


def text_content_hashes(texts: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each text's exact bytes (exact-duplicate detection).

    >>> a, b, c = text_content_hashes(["hi", "hi", "ho"]).tolist(); a == b != c
    True
    """
    import hashlib

    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") or 1
                        for t in texts), np.uint64, count=len(texts))
