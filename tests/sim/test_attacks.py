"""Real black-box attacks from adversarial-robustness-toolbox are flagged by the fingerprints early
in their query streams, while benign traffic on the same index almost never is."""

import pytest

from monitor.sim.attacks import queries_until_detection
from monitor.sim.toymodel import DigitsModel


@pytest.fixture(scope="module")
def model():
    return DigitsModel.train(hidden=64, seed=0)


def test_decision_based_attacks_are_flagged_within_fifty_queries(model):
    results, benign_fpr = queries_until_detection(model, attacks=("hopskipjump", "boundary"), images=2, budget=600)
    assert all(r.succeeded for r in results)  # the attacks are real: each one flips the model's answer
    assert all(r.first_flagged is not None and r.first_flagged <= 50 for r in results), results
    # ART's Boundary attack draws its start from an unseeded RandomState, so streams vary run to run; with the
    # finer quantization of small inputs (q=25) a fifth or more of them is flagged (measured 0.24-0.44 over 8
    # runs), HopSkipJump's 0.90-0.93; each one is first flagged within its first 11 queries.
    assert all(r.flagged_share > 0.2 for r in results), results
    assert benign_fpr < 0.01


def test_square_attack_is_flagged_before_its_stream_ends(model):
    results, _ = queries_until_detection(model, attacks=("square",), images=2, budget=600)
    long_runs = [r for r in results if r.queries >= 100]
    assert long_runs and all(r.first_flagged is not None and r.first_flagged <= 50 for r in long_runs), results


def test_white_box_attacks_from_art_are_separated_from_clean_inputs(model):
    import numpy as np

    from monitor.detect.profiles import ModelProfile
    from monitor.sim.attacks import white_box_detection
    from monitor.sim.toymodel import augment, load_digits_scaled

    x, y = load_digits_scaled()
    reference, _ = augment(np.random.default_rng(1), x, y, 3000)
    profile = ModelProfile.fit(reference, model.forward(reference).probs.argmax(axis=1).astype(str), fpr=0.002)
    results = {(r.attack, r.eps): r for r in white_box_detection(model, profile, eps_values=(0.1, 0.2))}
    for attack in ("fgsm", "pgd"):
        strong, mild = results[(attack, 0.2)], results[(attack, 0.1)]
        assert strong.success_rate > 0.9 and strong.auroc > 0.95 and strong.tpr_at_1pct_fpr > 0.8, strong
        # shrinkage (Ledoit-Wolf) no longer lets pixels that are constant in clean digits dominate: mild attacks
        # on clean test images rank a little lower (0.93 with the old fixed ridge), noisy benign traffic far lower
        assert mild.auroc_mahalanobis > 0.85 and mild.auroc > 0.8, mild
        assert results[(attack, 0.2)].success_rate >= results[(attack, 0.1)].success_rate
