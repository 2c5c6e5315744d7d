"""Small digit classifiers for the demo and tests: scikit-learn MLPs with a numpy forward pass.

The forward pass exposes what a served model would log (penultimate-layer embedding,
logits, probabilities) and the input gradient, so white-box attacks (FGSM) are real attacks
on the very model whose traffic is monitored.

>>> model = DigitsModel.train(hidden=32, seed=0)
>>> out = model.forward(model.x_test[:5])
>>> out.embedding.shape, out.logits.shape, bool(model.accuracy() > 0.9)
((5, 32), (5, 10), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Forward:
    embedding: np.ndarray
    logits: np.ndarray
    probs: np.ndarray


@lru_cache(maxsize=1)
def load_digits_scaled() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, pixels scaled to ``[0, 1]`` (float32), labels int."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


@dataclass(frozen=True)
class DigitsModel:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def train(cls, hidden: int = 64, seed: int = 0) -> DigitsModel:
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        x, y = load_digits_scaled()
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
        mlp = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=400, random_state=seed, alpha=1e-3)
        mlp.fit(x_train, y_train)
        (w1, w2), (b1, b2) = mlp.coefs_, mlp.intercepts_
        return cls(*(a.astype(np.float32) for a in (w1, b1, w2, b2)), x_train, y_train, x_test, y_test)

    def forward(self, x: np.ndarray) -> Forward:
        embedding = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits = embedding @ self.w2 + self.b2
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return Forward(embedding, logits, shifted / shifted.sum(axis=1, keepdims=True))

    def accuracy(self) -> float:
        return float((self.forward(self.x_test).probs.argmax(axis=1) == self.y_test).mean())

    def input_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the cross-entropy loss with respect to the input."""
        hidden = x @ self.w1 + self.b1
        out = self.forward(x)
        d_logits = out.probs.copy()
        d_logits[np.arange(len(y)), y] -= 1.0
        d_hidden = (d_logits @ self.w2.T) * (hidden > 0)
        return d_hidden @ self.w1.T

    def fgsm(self, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
        """Fast gradient sign method (Goodfellow et al. 2015), clipped to the valid pixel range."""
        return np.clip(x + eps * np.sign(self.input_gradient(x, y)), 0.0, 1.0).astype(np.float32)
