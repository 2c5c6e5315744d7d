"""Embedding scorer throughput by backend, batch size and dimension, beside the memory-bandwidth bound
of moving each batch (host copy bandwidth, and for CUDA the device copy bandwidth, measured in the
same run).

    python3 bench/scorer.py

Backends: numpy, torch on the CPU, and torch on CUDA when a GPU is present. Each torch figure
includes the host -> device copy of the batch and the copy of the scores back.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.detect.profiles import ModelProfile  # noqa: E402


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


def device_bandwidth(torch, device: str, megabytes: int = 512) -> float:
    source = torch.ones(megabytes * (1 << 20) // 4, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best


def rate(scorer, batch: np.ndarray, logits: np.ndarray, seconds: float = 0.5) -> float:
    scorer.score(batch, logits)  # warm-up (CUDA kernels, caches)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        scorer.score(batch, logits)  # returns numpy arrays: a torch backend has synchronized
        runs += 1
    return runs * len(batch) / (time.perf_counter() - started)


def backends(profile: ModelProfile) -> list[tuple[str, object]]:
    found = [("numpy", profile)]
    try:
        import torch
    except ImportError:
        return found
    from monitor.detect.torch_profiles import TorchProfile

    torch.set_num_threads(os.cpu_count() or 1)
    found.append(("torch/cpu", TorchProfile(profile, "cpu")))
    if torch.cuda.is_available():
        found.append(("torch/cuda", TorchProfile(profile, "cuda")))
    return found


def main() -> int:
    rng = np.random.default_rng(0)
    bandwidth = {"numpy": copy_bandwidth()}
    bandwidth["torch/cpu"] = bandwidth["numpy"]
    line = f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; " \
           f"host copy bandwidth {bandwidth['numpy'] / 1e9:.1f} GB/s"
    try:
        import torch

        line += f"; torch {torch.__version__}"
        if torch.cuda.is_available():
            bandwidth["torch/cuda"] = device_bandwidth(torch, "cuda")
            line += f", {torch.cuda.get_device_name()} copy bandwidth {bandwidth['torch/cuda'] / 1e9:.0f} GB/s"
    except ImportError:
        line += "; torch not installed"
    print(line)
    print(f"{'backend':>10} {'dim':>5} {'batch':>6} {'embeddings/s':>13} {'vs numpy':>9} {'bandwidth bound/s':>18} "
          f"{'fraction of bound':>18}")
    for dim in (64, 128, 512):
        reference = rng.normal(size=(5000, dim)).astype(np.float32)
        labels = rng.integers(0, 10, len(reference)).astype(str)
        reference_logits = rng.normal(size=(len(reference), 10)).astype(np.float32)
        profile = ModelProfile.fit(reference, labels, reference_logits, fpr=0.01, seed=0)
        for size in (64, 256, 1024, 4096):
            batch = rng.normal(size=(size, dim)).astype(np.float32)
            logits = rng.normal(size=(size, 10)).astype(np.float32)
            baseline = None
            for name, scorer in backends(profile):
                measured = rate(scorer, batch, logits)
                baseline = baseline or measured
                bound = bandwidth[name] / (4 * (dim + 10))  # each embedding and its logits read once
                print(f"{name:>10} {dim:5} {size:6} {measured:13,.0f} {measured / baseline:8.2f}x {bound:18,.0f} "
                      f"{measured / bound:18.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
