"""Embedding scorer throughput by backend, batch size and dimension, beside the memory-bandwidth bound
of moving each batch (host copy bandwidth, and for CUDA the device copy bandwidth, measured in the
same run).

    python3 bench/scorer.py

Backends: numpy, torch on the CPU, and torch on CUDA when a GPU is present. Each torch figure
includes the host -> device copy of the batch and the copy of the scores back. The kNN score makes
scoring arithmetic-bound (each embedding is compared with the whole reference bank): the GFLOP/s
column counts ``2 * dim * (dim + classes + bank)`` operations per embedding. The last table scores
whole score requests (``EmbeddingScorer``: grouping, SLI deltas and LSH names of flagged events
included) from a synthetic scenario's engine, as the scorer worker does.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.contracts.score_requests import ScoreRequestBatch  # noqa: E402
from monitor.detect.engine import Engine, EngineSettings  # noqa: E402
from monitor.detect.parsing import parse_batch  # noqa: E402
from monitor.detect.profiles import ModelProfile  # noqa: E402
from monitor.detect.scorer import EmbeddingScorer  # noqa: E402
from monitor.sim.synth import Scenario  # noqa: E402

CLASSES = 10


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


def best_device_seconds(torch, copy: Callable[[], object]) -> float:
    """The fastest of five runs of ``copy`` on the GPU, synchronized before and after."""
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        started = time.perf_counter()
        copy()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def device_bandwidth(torch, device: str, megabytes: int = 512) -> float:
    source = torch.ones(megabytes * (1 << 20) // 4, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / best_device_seconds(torch, lambda: target.copy_(source))


def upload_bandwidth(torch, device: str, megabytes: int = 256) -> float:
    """Bytes/s of a host (pageable numpy) -> device copy, as ``TorchProfile.score`` makes of each batch."""
    source = np.ones(megabytes * (1 << 20) // 4, np.float32)
    return source.nbytes / best_device_seconds(torch, lambda: torch.as_tensor(source, device=device))


def rate(score: Callable[[], int], seconds: float = 0.5) -> float:
    """Items a second of ``score`` (which returns how many it scored), after one warm-up call (CUDA kernels,
    caches). A torch backend returns numpy arrays, so it has synchronized."""
    score()
    runs, items, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        items += score()
        runs += 1
    return items / (time.perf_counter() - started)


def devices() -> list[str | None]:
    """None (numpy), then the torch devices present."""
    try:
        import torch
    except ImportError:
        return [None]
    torch.set_num_threads(os.cpu_count() or 1)
    return [None, "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backends(profile: ModelProfile, present: list[str | None]) -> list[tuple[str, object]]:
    if present == [None]:
        return [("numpy", profile)]
    from monitor.detect.torch_profiles import TorchProfile

    return [("numpy", profile)] + [(f"torch/{device}", TorchProfile(profile, device)) for device in present[1:]]


def whole_requests(present: list[str | None]) -> None:
    """EmbeddingScorer on the score requests a synthetic scenario's engine sends, per backend."""
    scenario = Scenario.build(seed=5, duration_s=3600.0)
    profile = scenario.reference_profile(per_model=2000)
    engine = Engine(EngineSettings(fingerprint_secret=b"s", remote_embedding_scoring=True), profile)
    requests = []
    for chunk in scenario.chunks(chunk_s=600.0):
        result = engine.process(parse_batch(chunk.records).batch)
        requests.append(ScoreRequestBatch("i", result.watermark, result.score_groups))
    embeddings = sum(len(group) for request in requests for group in request.groups)
    print(f"whole score requests: {len(requests)} requests, {embeddings:,} embeddings (scenario seed 5, one hour)")
    baseline = None
    for device in present:
        scorer = EmbeddingScorer(profile, device=device)
        def score_all(scorer: EmbeddingScorer = scorer) -> int:
            for request in requests:
                scorer.score(request)
            return embeddings

        measured = rate(score_all, seconds=1.0)
        baseline = baseline or measured
        print(f"{scorer.backend:>10} {measured:13,.0f} embeddings/s {measured / baseline:8.2f}x")


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
            bandwidth["torch/cuda"] = upload_bandwidth(torch, "cuda")  # the bound: each batch crosses to the device
            line += (f", {torch.cuda.get_device_name()} copy bandwidth {device_bandwidth(torch, 'cuda') / 1e9:.0f} "
                     f"GB/s, host -> device {bandwidth['torch/cuda'] / 1e9:.1f} GB/s (the bound for torch/cuda)")
    except ImportError:
        line += "; torch not installed"
    print(line)
    present = devices()
    print(f"{'backend':>10} {'dim':>5} {'batch':>6} {'embeddings/s':>13} {'vs numpy':>9} {'bandwidth bound/s':>18} "
          f"{'fraction of bound':>18} {'GFLOP/s':>8}")
    for dim in (64, 128, 512):
        reference = rng.normal(size=(5000, dim)).astype(np.float32)
        labels = rng.integers(0, CLASSES, len(reference)).astype(str)
        reference_logits = rng.normal(size=(len(reference), CLASSES)).astype(np.float32)
        profile = ModelProfile.fit(reference, labels, reference_logits, fpr=0.01, seed=0)
        flops = 2 * dim * (dim + CLASSES + len(profile.bank))  # per embedding
        for size in (64, 256, 1024, 4096, 16384):
            batch = rng.normal(size=(size, dim)).astype(np.float32)
            logits = rng.normal(size=(size, CLASSES)).astype(np.float32)
            baseline = None
            for name, scorer in backends(profile, present):
                measured = rate(lambda: len(scorer.score(batch, logits).flagged))  # noqa: B023 (called here)
                baseline = baseline or measured
                bound = bandwidth[name] / (4 * (dim + CLASSES))  # each embedding and its logits read once
                print(f"{name:>10} {dim:5} {size:6} {measured:13,.0f} {measured / baseline:8.2f}x {bound:18,.0f} "
                      f"{measured / bound:18.2%} {measured * flops / 1e9:8.1f}")
    whole_requests(present)
    return 0


if __name__ == "__main__":
    sys.exit(main())
