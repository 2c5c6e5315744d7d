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

import warnings
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


def augment(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct, realistic benign digits: a random blend of three images of one class, a sub-pixel
    shift, a contrast change and sensor noise. Returns ``(images in [0, 1], labels)``."""
    first = rng.integers(0, len(x), n)
    labels = y[first]
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    others = np.array([[rng.choice(by_class[c]) for c in labels] for _ in range(2)], dtype=np.int64).reshape(2, n)
    weights = rng.dirichlet([2.0, 2.0, 2.0], n).astype(np.float32)
    images = (weights[:, :1] * x[first] + weights[:, 1:2] * x[others[0]] + weights[:, 2:] * x[others[1]])
    images = images.reshape(n, 8, 8)
    for axis in (1, 2):
        frac = rng.uniform(-0.3, 0.3, (n, 1, 1)).astype(np.float32)
        toward = np.where(frac > 0, np.roll(images, 1, axis=axis), np.roll(images, -1, axis=axis))
        images = images + np.abs(frac) * (toward - images)
    out = images.reshape(n, 64) * rng.uniform(0.85, 1.15, (n, 1)) + rng.normal(0, 0.02, (n, 64))
    return np.clip(out, 0, 1).astype(np.float32), labels


@dataclass(frozen=True)
class NumpyMlp:
    """A one-hidden-layer ReLU network in numpy: what a served model logs (embedding, logits, probabilities)
    and the input gradient that white-box attacks use."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def inputs(self) -> int:
        return int(self.w1.shape[0])

    @property
    def classes(self) -> int:
        return int(self.w2.shape[1])

    @staticmethod
    def fit_weights(x: np.ndarray, y: np.ndarray, hidden: int, seed: int, max_iter: int = 60,
                    alpha: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(w1, b1, w2, b2) of a scikit-learn MLP trained on ``x, y`` (float32)."""
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=max_iter, random_state=seed, alpha=alpha,
                            early_stopping=True, n_iter_no_change=5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the iteration cap is deliberate
            mlp.fit(x, y)
        (w1, w2), (b1, b2) = mlp.coefs_, mlp.intercepts_
        if w2.shape[1] == 1:  # scikit-learn keeps one logit for two classes: make it (-z/2, z/2)
            w2, b2 = np.hstack([-w2 / 2, w2 / 2]), np.r_[-b2 / 2, b2 / 2]
        f1, g1, f2, g2 = (np.asarray(a, np.float32) for a in (w1, b1, w2, b2))
        return f1, g1, f2, g2

    def forward(self, x: np.ndarray) -> Forward:
        embedding = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits = embedding @ self.w2 + self.b2
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return Forward(embedding, logits, shifted / shifted.sum(axis=1, keepdims=True))

    def input_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the cross-entropy loss with respect to the input."""
        hidden = x @ self.w1 + self.b1
        out = self.forward(x)
        d_logits = out.probs.copy()
        d_logits[np.arange(len(y)), y] -= 1.0
        d_hidden = (d_logits @ self.w2.T) * (hidden > 0)
        return d_hidden @ self.w1.T

    def fgsm(self, x: np.ndarray, y: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
        """Fast gradient sign method (Goodfellow et al. 2015), clipped to the valid input range."""
        return np.clip(x + eps * np.sign(self.input_gradient(x, y)), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class DigitsModel(NumpyMlp):
    """The demo's digit classifier, with its train and test splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @classmethod
    def train(cls, hidden: int = 64, seed: int = 0, samples: int = 12_000) -> DigitsModel:
        """Train on augmented images of 60% of the digits; the other 40% are the test split."""
        from sklearn.model_selection import train_test_split

        x, y = load_digits_scaled()
        x_split, x_test, y_split, y_test = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
        x_train, y_train = augment(np.random.default_rng(seed), x_split, y_split, samples)
        w1, b1, w2, b2 = cls.fit_weights(x_train, y_train, hidden, seed)
        return cls(w1, b1, w2, b2, x_train, y_train, x_test, y_test)

    def accuracy(self) -> float:
        return float((self.forward(self.x_test).probs.argmax(axis=1) == self.y_test).mean())
