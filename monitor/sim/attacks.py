"""Real black-box attacks as query streams, for measuring the fingerprint detector.

adversarial-robustness-toolbox (ART) runs HopSkipJump, Boundary and Square attacks against the
digits model through a classifier that records every query it is asked; the recorded stream is
what an attacker would send to the API. :func:`queries_until_detection` replays streams through the
fingerprint index behind benign traffic and reports when each attack is first flagged, beside the
benign false-positive rate measured on the same index.

ART is an optional dependency (``pip install advmon[attacks]``; the test extra has it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from unittest import mock

import numpy as np

from monitor.detect.fingerprint import Fingerprinter, QueryIndex, content_hashes
from monitor.sim.toymodel import DigitsModel, NumpyMlp, augment, load_digits_scaled

ATTACKS = ("hopskipjump", "boundary", "square")


@dataclass(frozen=True)
class Detection:
    attack: str
    image: int
    queries: int  # the attack's stream length
    first_flagged: int | None  # 1-based position of the first flagged query; None: never
    flagged_share: float
    succeeded: bool  # the attack changed the model's answer


def record_attack(model: NumpyMlp, attack: str, x: np.ndarray, seed: int, budget: int,
                  image_shape: tuple[int, ...] | None = (1, 8, 8)) -> tuple[np.ndarray, bool]:
    """Run one black-box attack on one input; returns the queries it made (in order) and success.

    ART's HopSkipJump, Boundary, Square and SimBA (``simba``: random search over pixels) need an image
    shape (channels first); ``random-search`` (score-based, any input) is :func:`random_search`.
    """
    if attack == "random-search":
        return random_search(model, x, np.random.default_rng(seed), budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.attacks.evasion import BoundaryAttack, HopSkipJump, SimBA, SquareAttack
        from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    queries: list[np.ndarray] = []
    n = model.inputs

    def predict(batch: np.ndarray) -> np.ndarray:
        flat = np.asarray(batch, np.float32).reshape(len(batch), n)
        queries.append(flat.copy())
        return model.forward(flat).probs

    shape = image_shape or (n,)
    classifier = BlackBoxClassifierNeuralNetwork(predict, input_shape=shape, nb_classes=model.classes,
                                                 clip_values=(0.0, 1.0), channels_first=True)
    makers = {
        "hopskipjump": lambda: HopSkipJump(classifier, max_iter=10, max_eval=budget // 10, init_eval=20, verbose=False),
        "boundary": lambda: BoundaryAttack(classifier, targeted=False, max_iter=budget // 20, num_trial=10,
                                           sample_size=10, verbose=False),
        "square": lambda: SquareAttack(classifier, norm=np.inf, eps=0.08, max_iter=budget, nb_restarts=1,
                                       verbose=False),
        "simba": lambda: SimBA(classifier, attack="px", max_iter=budget, epsilon=0.2, verbose=False),
    }
    np.random.seed(seed)  # ART draws from numpy's global generator, and HopSkipJump from a fresh RandomState()
    source = x.reshape(1, *shape).astype(np.float32)
    with warnings.catch_warnings(), mock.patch.object(np.random, "RandomState", _SeededRandomState):
        warnings.simplefilter("ignore")
        adversarial = makers[attack]().generate(source)
    stream = np.vstack(queries)[:budget]
    before = model.forward(x.reshape(1, n)).probs.argmax()
    after = model.forward(adversarial.reshape(1, n).astype(np.float32)).probs.argmax()
    return stream, bool(before != after)


def random_search(model: NumpyMlp, x: np.ndarray, rng: np.random.Generator, budget: int,
                  eps: float = 0.1) -> tuple[np.ndarray, bool]:
    """A score-based random search (in the spirit of Square/SimBA, for any input): perturb a random
    block of coordinates by +-eps, keep the change when the true class's probability drops."""
    n = model.inputs
    current = x.reshape(1, n).astype(np.float32)
    label = int(model.forward(current).probs.argmax())
    best = float(model.forward(current).probs[0, label])
    queries = []
    for _ in range(budget):
        candidate = current.copy()
        block = rng.choice(n, size=max(1, n // 8), replace=False)
        candidate[0, block] = np.clip(x.reshape(n)[block] + eps * rng.choice([-1.0, 1.0], len(block)), 0, 1)
        queries.append(candidate[0])
        probs = model.forward(candidate).probs[0]
        if probs[label] < best:
            current, best = candidate, float(probs[label])
        if probs.argmax() != label:
            break
    return np.vstack(queries), bool(model.forward(current).probs.argmax() != label)


def white_box(model: NumpyMlp, x: np.ndarray, method: str, eps: float, seed: int = 0) -> np.ndarray:
    """Adversarial versions of ``x`` by ART's FGSM (``fgsm``) or 10-step PGD (``pgd``) at L-inf ``eps``,
    against the model's own predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentNumpy

    classifier = art_classifier(model)
    attack = (FastGradientMethod(classifier, eps=eps) if method == "fgsm" else
              ProjectedGradientDescentNumpy(classifier, eps=eps, eps_step=eps / 4, max_iter=10, num_random_init=0,
                                            verbose=False))
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(attack.generate(np.asarray(x, np.float32)), np.float32)


def queries_until_detection(model: DigitsModel, attacks=ATTACKS, images: int = 3, budget: int = 1000,
                            benign: int = 5000, seed: int = 0) -> tuple[list[Detection], float]:
    """Each attack stream after ``benign`` queries of benign traffic, on one index per attack run.

    Returns the detections and the benign false-positive rate (benign queries flagged) on that traffic.
    """
    x, y = load_digits_scaled()
    rng = np.random.default_rng(seed)
    background, _ = augment(rng, x, y, benign)
    fingerprinter = Fingerprinter.for_dimension(64, secret=b"attack-benchmark")
    warm = QueryIndex(fingerprinter.threshold)
    benign_flags = warm.update(fingerprinter.hashes(background), content_hashes(background), now=0.0).flagged
    results = []
    for attack in attacks:
        for image in range(images):
            stream, succeeded = record_attack(model, attack, model.x_test[image], seed + image, budget)
            index = QueryIndex(fingerprinter.threshold)
            index.update(fingerprinter.hashes(background), content_hashes(background), now=0.0)
            flagged = index.update(fingerprinter.hashes(stream), content_hashes(stream), now=1.0).flagged
            first = int(np.argmax(flagged)) + 1 if flagged.any() else None
            results.append(Detection(attack, image, len(stream), first, float(flagged.mean()), succeeded))
    return results, float(benign_flags.mean())


class _SeededRandomState(np.random.RandomState):
    """A ``RandomState()`` made without a seed takes one from numpy's (seeded) global generator: the attacks,
    and so the scenario families, are the same on every run."""

    def __init__(self, seed=None) -> None:
        super().__init__(np.random.randint(2**31) if seed is None else seed)


def art_classifier(model: NumpyMlp):
    """A numpy MLP as an ART estimator with loss gradients, so ART's white-box attacks (FGSM, PGD)
    run against it unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.estimators.classification.classifier import ClassifierMixin
        from art.estimators.estimator import BaseEstimator, LossGradientsMixin

    class DigitsClassifier(LossGradientsMixin, ClassifierMixin, BaseEstimator):
        estimator_params = BaseEstimator.estimator_params + ClassifierMixin.estimator_params

        def __init__(self) -> None:
            super().__init__(model=model, clip_values=(0.0, 1.0))
            self.nb_classes = model.classes

        @property
        def input_shape(self) -> tuple[int, ...]:
            return (model.inputs,)

        def predict(self, x, batch_size: int = 128, **kwargs):
            return model.forward(np.asarray(x, np.float32)).probs

        def fit(self, x, y, **kwargs) -> None:
            raise NotImplementedError("the model is trained by its own train()")

        def loss_gradient(self, x, y, **kwargs):
            labels = np.asarray(y).argmax(axis=1) if np.ndim(y) == 2 else np.asarray(y)
            return model.input_gradient(np.asarray(x, np.float32), labels).astype(np.float32)

        def compute_loss(self, x, y, **kwargs):
            labels = np.asarray(y).argmax(axis=1) if np.ndim(y) == 2 else np.asarray(y)
            probs = model.forward(np.asarray(x, np.float32)).probs
            return -np.log(probs[np.arange(len(labels)), labels] + 1e-12)

        def get_activations(self, *args, **kwargs):
            raise NotImplementedError

    return DigitsClassifier()


@dataclass(frozen=True)
class WhiteBoxResult:
    attack: str
    eps: float
    success_rate: float  # share of attacked test images whose prediction changed
    auroc: float  # clean test images vs. successful adversarial ones, by the detector's score / threshold
    auroc_mahalanobis: float  # the same ranking by the Mahalanobis score alone
    tpr_at_1pct_fpr: float  # of the detector's score / threshold, at its 99th percentile on clean images


def white_box_detection(
    model: DigitsModel, profile, eps_values=(0.05, 0.1, 0.2), seed: int = 0
) -> list[WhiteBoxResult]:
    """FGSM and PGD (ART) on the test split; the raw-input profile's largest score / threshold ranks
    clean against adversarial inputs."""
    from sklearn.metrics import roc_auc_score

    x = model.x_test.astype(np.float32)
    predicted = model.forward(x).probs.argmax(axis=1)
    clean = _ratio(profile, x)
    clean_mahalanobis = profile.score(x).mahalanobis
    results = []
    for eps in eps_values:
        for name in ("fgsm", "pgd"):
            adversarial = white_box(model, x, name, eps, seed)
            flipped = model.forward(adversarial).probs.argmax(axis=1) != predicted
            attacked = _ratio(profile, adversarial[flipped])
            labels = np.r_[np.zeros(len(clean)), np.ones(len(attacked))]
            results.append(WhiteBoxResult(
                name, eps, float(flipped.mean()), float(roc_auc_score(labels, np.r_[clean, attacked])),
                float(roc_auc_score(labels, np.r_[clean_mahalanobis, profile.score(adversarial[flipped]).mahalanobis])),
                float((attacked > np.quantile(clean, 0.99)).mean())))
    return results


def _ratio(profile, x: np.ndarray) -> np.ndarray:
    """The detector's view: the larger of the Mahalanobis and kNN scores over their thresholds."""
    scores = profile.score(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.column_stack([scores.mahalanobis, scores.knn]) / profile.thresholds[:2]
    return ratios.max(axis=1)
