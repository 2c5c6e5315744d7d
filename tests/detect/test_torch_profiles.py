"""The torch backend scores like the numpy backend: same scores to float32 tolerance, same decisions
except for events within that tolerance of a threshold; on the CPU here, and on CUDA where present."""

import numpy as np
import pytest

from monitor.contracts.score_requests import ScoreRequestBatch
from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.parsing import parse_batch
from monitor.detect.profiles import ModelProfile
from monitor.detect.scorer import EmbeddingScorer
from monitor.detect.torch_profiles import TorchProfile, torch_device
from monitor.sim.synth import Scenario

torch = pytest.importorskip("torch")  # the gpu extra: pip install -e '.[gpu,test]' runs these on the CPU too

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
RTOL = 1e-4


def near_threshold(scores, thresholds) -> np.ndarray:
    columns = np.column_stack([scores.mahalanobis, scores.knn, scores.energy])
    with np.errstate(invalid="ignore"):
        return (np.abs(columns - thresholds) <= RTOL * np.abs(thresholds) + 1e-6).any(axis=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim,classes", [(16, 3), (64, 10), (256, 10)])
def test_scores_match_numpy(device, dim, classes):
    rng = np.random.default_rng(dim)
    reference = rng.normal(size=(4000, dim)).astype(np.float32)
    labels = rng.integers(0, classes, len(reference)).astype(str)
    profile = ModelProfile.fit(reference, labels, rng.normal(size=(len(reference), classes)), fpr=0.05)
    batch = (rng.normal(size=(3000, dim)) * rng.choice([1.0, 1.3, 3.0], size=(3000, 1))).astype(np.float32)
    logits = rng.normal(size=(3000, classes)).astype(np.float32) * 3
    logits[::7] = np.nan  # events that logged no logits

    expected = profile.score(batch, logits)
    got = TorchProfile(profile, device).score(batch, logits)

    for name in ("mahalanobis", "knn", "energy"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=RTOL, atol=1e-5, err_msg=name)
    assert np.isnan(got.energy[::7]).all()
    decided = ~near_threshold(expected, profile.thresholds)
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(got.flagged[decided], expected.flagged[decided])
    assert 0.05 < expected.flagged.mean() < 0.95  # both kinds of decision are exercised


@pytest.mark.parametrize("device", DEVICES)
def test_scorer_on_torch_counts_what_numpy_counts(device):
    scenario = Scenario.build(seed=5, duration_s=1800.0)
    profile = scenario.reference_profile(per_model=2000)
    engine = Engine(EngineSettings(fingerprint_secret=b"s", remote_embedding_scoring=True), profile)
    on_numpy, on_torch = EmbeddingScorer(profile), EmbeddingScorer(profile, device=device)
    assert (on_numpy.backend, on_torch.backend) == ("numpy", f"torch/{device}")
    flagged = scored = 0
    batches = [parse_batch(chunk.records).batch for chunk in scenario.chunks(chunk_s=300.0)]
    for batch in [*batches, None]:  # None: the end of input releases the last minutes' embeddings
        result = engine.process(batch) if batch is not None else engine.finish()
        request = ScoreRequestBatch("i", result.watermark, result.score_groups)
        a, b = on_numpy.score(request), on_torch.score(request)
        assert a.scored == b.scored
        scored += a.scored
        np.testing.assert_array_equal(a.rows.values, b.rows.values)
        assert a.flagged.event_id.tolist() == b.flagged.event_id.tolist()
        flagged += len(a.flagged.event_id)
    assert flagged > 50 and scored > 1000


def test_backend_choice():
    assert torch_device("numpy") is None
    assert torch_device("torch") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("auto") == ("cuda" if torch.cuda.is_available() else None)
    with pytest.raises(ValueError, match="unknown scorer backend"):
        torch_device("tpu")
