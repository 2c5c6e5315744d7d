"""Embedding scorer throughput (numpy backend) by batch size and dimension, beside the memory-bandwidth
bound of moving each batch (measured in the same run with a large numpy copy).

    python3 bench/scorer.py

The torch/CUDA backend is not built yet (issue 4); this is the CPU baseline it has to beat.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.scoring import ModelProfile  # noqa: E402


def copy_bandwidth(megabytes: int = 256) -> float:
    """Bytes/s of a large array copy (read + write counted once each)."""
    source = np.ones(megabytes * (1 << 20) // 4, np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def rate(profile: ModelProfile, batch: np.ndarray, logits: np.ndarray, seconds: float = 0.5) -> float:
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        profile.score(batch, logits)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - started)


def main() -> int:
    rng = np.random.default_rng(0)
    bandwidth = copy_bandwidth()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"{'dim':>5} {'batch':>6} {'embeddings/s':>13} {'bandwidth bound/s':>18} {'fraction of bound':>18}")
    for dim in (64, 128, 512):
        reference = rng.normal(size=(5000, dim)).astype(np.float32)
        labels = rng.integers(0, 10, len(reference)).astype(str)
        reference_logits = rng.normal(size=(len(reference), 10)).astype(np.float32)
        profile = ModelProfile.fit(reference, labels, reference_logits, fpr=0.01, seed=0)
        for size in (64, 256, 1024, 4096):
            batch = rng.normal(size=(size, dim)).astype(np.float32)
            logits = rng.normal(size=(size, 10)).astype(np.float32)
            measured = rate(profile, batch, logits)
            bound = bandwidth / (4 * (dim + 10))  # each embedding and its logits read once
            print(f"{dim:5} {size:6} {measured:13,.0f} {bound:18,.0f} {measured / bound:18.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
