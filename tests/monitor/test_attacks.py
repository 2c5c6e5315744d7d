"""Real black-box attacks from adversarial-robustness-toolbox are flagged by the fingerprints early
in their query streams, while benign traffic on the same index almost never is."""

import pytest

from monitor.attacks import queries_until_detection
from monitor.toymodel import DigitsModel


@pytest.fixture(scope="module")
def model():
    return DigitsModel.train(hidden=64, seed=0)


def test_decision_based_attacks_are_flagged_within_fifty_queries(model):
    results, benign_fpr = queries_until_detection(model, attacks=("hopskipjump", "boundary"), images=2, budget=600)
    assert all(r.succeeded for r in results)  # the attacks are real: each one flips the model's answer
    assert all(r.first_flagged is not None and r.first_flagged <= 50 for r in results), results
    assert all(r.flagged_share > 0.5 for r in results), results
    assert benign_fpr < 0.01


def test_square_attack_is_flagged_before_its_stream_ends(model):
    results, _ = queries_until_detection(model, attacks=("square",), images=2, budget=600)
    long_runs = [r for r in results if r.queries >= 100]
    assert long_runs and all(r.first_flagged is not None and r.first_flagged <= 50 for r in long_runs), results
