"""White-box attacks (ART: FGSM, PGD) on the digits model against the raw-input reference profile:
attack success, AUROC of clean vs. successful adversarial inputs (the detector's score / threshold,
and Mahalanobis alone), and the detector's TPR at 1% FPR.

    python3 bench/whitebox.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.detect.profiles import ModelProfile  # noqa: E402
from monitor.sim.attacks import white_box_detection  # noqa: E402
from monitor.sim.toymodel import DigitsModel, augment, load_digits_scaled  # noqa: E402


def main() -> int:
    started = time.perf_counter()
    model = DigitsModel.train(hidden=64, seed=0)
    x, y = load_digits_scaled()
    reference, _ = augment(np.random.default_rng(1), x, y, 6000)
    profile = ModelProfile.fit(reference, model.forward(reference).probs.argmax(axis=1).astype(str), fpr=0.002, seed=0)
    print(f"digits MLP, test accuracy {model.accuracy():.3f}; profile fitted on 6,000 augmented clean images "
          f"(benign FPR target 0.2%); {len(model.x_test)} test images attacked")
    print(f"{'attack':6} {'eps':>5} {'success':>8} {'AUROC':>7} {'AUROC (Mahalanobis)':>20} {'TPR @ 1% FPR':>13}")
    for r in white_box_detection(model, profile, eps_values=(0.05, 0.1, 0.15, 0.2)):
        print(f"{r.attack:6} {r.eps:5.2f} {r.success_rate:8.0%} {r.auroc:7.3f} {r.auroc_mahalanobis:20.3f} "
              f"{r.tpr_at_1pct_fpr:13.0%}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
