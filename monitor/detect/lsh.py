"""Random-hyperplane LSH (Charikar 2002) signatures of embeddings, for deduplicating suspicious inputs.

Two embeddings at angle theta agree on each bit with probability ``1 - theta / pi``; near-identical
inputs get the same 64-bit signature, so the forensics corpus keeps one of them.

>>> import numpy as np
>>> lsh = HyperplaneLSH(dim=16, seed=0)
>>> x = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
>>> s = lsh.signatures(np.vstack([x, x[:1] * 1.001]))
>>> bool(s[0] == s[2]), bool(s[0] == s[1]), len(lsh.hex(s)[0])
(True, False, 16)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


class HyperplaneLSH:
    def __init__(self, dim: int, bits: int = 64, seed: int = 0) -> None:
        if not 1 <= bits <= 64:
            raise ValueError("bits must be between 1 and 64")
        self.planes = np.random.default_rng(seed).normal(size=(dim, bits)).astype(np.float32)
        self._weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))

    def signatures(self, embeddings: np.ndarray) -> np.ndarray:
        """One uint64 per row: bit i is the side of hyperplane i."""
        bits = (np.asarray(embeddings, np.float32) @ self.planes) > 0
        return (bits.astype(np.uint64) * self._weights).sum(axis=1, dtype=np.uint64)

    @staticmethod
    def hex(signatures: np.ndarray) -> list[str]:
        return [f"{int(s):016x}" for s in signatures]


@lru_cache(maxsize=64)
def planes_for(dim: int) -> HyperplaneLSH:
    """The shared hyperplanes of one embedding dimension (seeded by it)."""
    return HyperplaneLSH(dim, seed=dim)


def embedding_fingerprints(embeddings: np.ndarray) -> list[str]:
    """Hex signatures with the planes of the embeddings' dimension (seeded by it), so ingest and the
    scorer name the same embedding alike.

    >>> e = np.ones((1, 8), np.float32)
    >>> embedding_fingerprints(e) == embedding_fingerprints(e * 2)
    True
    """
    return HyperplaneLSH.hex(planes_for(embeddings.shape[1]).signatures(embeddings))
