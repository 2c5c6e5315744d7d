"""The torch backend of the embedding scores: ``ModelProfile.score``'s arithmetic on a torch device.

The scorer worker uses it on CUDA when a GPU is there (``--backend auto``) and numpy otherwise.
Both backends compute the same float32 Mahalanobis and cosine-kNN scores and the float64 energy
score; only the order of float32 accumulation differs, so scores agree to about 1e-5 relative
and decisions differ only for events within that distance of a threshold (tested).

>>> import numpy as np, pytest
>>> _ = pytest.importorskip("torch")  # the gpu extra
>>> from monitor.detect.profiles import ModelProfile
>>> rng = np.random.default_rng(0)
>>> profile = ModelProfile.fit(rng.normal(size=(600, 8)).astype(np.float32), rng.integers(0, 3, 600).astype(str),
...                            fpr=0.01, k=10)
>>> batch = rng.normal(size=(5, 8)).astype(np.float32) * np.array([[1], [1], [1], [1], [9]], np.float32)
>>> scores = TorchProfile(profile, device="cpu").score(batch)
>>> bool(np.allclose(scores.mahalanobis, profile.score(batch).mahalanobis, rtol=1e-4)), scores.flagged.tolist()
(True, [False, False, False, False, True])
"""

from __future__ import annotations

import logging

import numpy as np

from monitor.detect.profiles import ModelProfile, Scores
from monitor.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "torch")


def torch_device(backend: str) -> str | None:
    """The torch device a backend choice resolves to, or None for numpy.

    ``auto`` takes CUDA when torch is installed and sees a GPU, else numpy; ``torch`` takes CUDA if
    present, else torch on the CPU (for parity checks); ``numpy`` is numpy.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown scorer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        return None
    try:
        import torch
    except ImportError:
        if backend == "torch":
            raise ConfigError("scorer backend 'torch' needs torch: pip install -e '.[gpu]'") from None
        return None
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if backend == "torch" else None


class TorchProfile:
    """One model's reference statistics held on a torch device, scoring like ``ModelProfile.score``."""

    def __init__(self, profile: ModelProfile, device: str = "cuda") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.k = profile.k
        self.thresholds = profile.thresholds

        def put(array):
            return torch.as_tensor(np.ascontiguousarray(array, np.float32), device=self.device)

        self._means = put(profile.means)
        self._precision = put(profile.precision)
        self._means_term = ((self._means @ self._precision) * self._means).sum(1)
        self._bank_t = put(profile.bank).T.contiguous()

    def score(self, embeddings: np.ndarray, logits: np.ndarray | None = None) -> Scores:
        torch = self._torch
        with torch.inference_mode():
            f = torch.as_tensor(np.ascontiguousarray(embeddings, np.float32), device=self.device)
            fp = f @ self._precision
            quad = (fp * f).sum(1)[:, None] - 2 * fp @ self._means.T + self._means_term
            mahalanobis = quad.min(1).values
            unit = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
            kth = (unit @ self._bank_t).topk(self.k, dim=1).values[:, -1]
            knn = 1.0 - kth
            energy = None
            if logits is not None:
                on_device = torch.as_tensor(np.ascontiguousarray(logits), device=self.device)  # upcast there
                energy = -torch.logsumexp(on_device.double(), dim=1)
            mahalanobis = mahalanobis.double().cpu().numpy()
            knn = knn.double().cpu().numpy()
            energy = np.full(len(f), np.nan) if energy is None else energy.cpu().numpy()
        return Scores.decided(self.thresholds, mahalanobis, knn, energy)
