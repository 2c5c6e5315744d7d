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

import numpy as np

from monitor.fingerprint import Fingerprinter, QueryIndex
from monitor.toymodel import DigitsModel, augment, load_digits_scaled

ATTACKS = ("hopskipjump", "boundary", "square")


@dataclass(frozen=True)
class Detection:
    attack: str
    image: int
    queries: int  # the attack's stream length
    first_flagged: int | None  # 1-based position of the first flagged query; None: never
    flagged_share: float
    succeeded: bool  # the attack changed the model's answer


def record_attack(model: DigitsModel, attack: str, x: np.ndarray, seed: int, budget: int) -> tuple[np.ndarray, bool]:
    """Run one ART attack on one 64-pixel image; returns the queries it made (in order) and success."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.attacks.evasion import BoundaryAttack, HopSkipJump, SquareAttack
        from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    queries: list[np.ndarray] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        flat = np.asarray(batch, np.float32).reshape(len(batch), 64)
        queries.append(flat.copy())
        return model.forward(flat).probs

    classifier = BlackBoxClassifierNeuralNetwork(predict, input_shape=(1, 8, 8), nb_classes=10,
                                                 clip_values=(0.0, 1.0), channels_first=True)
    makers = {
        "hopskipjump": lambda: HopSkipJump(classifier, max_iter=10, max_eval=budget // 10, init_eval=20, verbose=False),
        "boundary": lambda: BoundaryAttack(classifier, targeted=False, max_iter=budget // 20, num_trial=10,
                                           sample_size=10, verbose=False),
        "square": lambda: SquareAttack(classifier, norm=np.inf, eps=0.08, max_iter=budget, nb_restarts=1,
                                       verbose=False),
    }
    np.random.seed(seed)  # ART draws from numpy's global generator
    image = x.reshape(1, 1, 8, 8).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adversarial = makers[attack]().generate(image)
    stream = np.vstack(queries)[:budget]
    before = model.forward(x.reshape(1, 64)).probs.argmax()
    after = model.forward(adversarial.reshape(1, 64).astype(np.float32)).probs.argmax()
    return stream, bool(before != after)


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
    benign_flags = warm.update(fingerprinter.hashes(background), background, now=0.0).flagged
    results = []
    for attack in attacks:
        for image in range(images):
            stream, succeeded = record_attack(model, attack, model.x_test[image], seed + image, budget)
            index = QueryIndex(fingerprinter.threshold)
            index.update(fingerprinter.hashes(background), background, now=0.0)
            flagged = index.update(fingerprinter.hashes(stream), stream, now=1.0).flagged
            first = int(np.argmax(flagged)) + 1 if flagged.any() else None
            results.append(Detection(attack, image, len(stream), first, float(flagged.mean()), succeeded))
    return results, float(benign_flags.mean())
