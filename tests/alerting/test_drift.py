"""Drift detectors (river) on per-minute series: they find a change and stay quiet before it."""

import numpy as np
import pytest

from monitor.contracts.sli import SliRows


@pytest.mark.parametrize(("detector", "within_minutes"), [("page_hinkley", 60), ("kswin", 60), ("adwin", 180)])
def test_drift_detectors_find_a_confidence_drop_and_stay_quiet_before_it(detector, within_minutes):
    """A 0.1 drop in mean confidence (per-minute means of 50 events); ADWIN's bound needs more points."""
    from monitor.alerting.drift import DriftEvaluator
    from monitor.spec.rules import DriftRule

    rule = DriftRule(name="d", detector=detector, delta=0.005 if detector == "page_hinkley" else 0.002,
                     threshold=0.2, alpha=0.001)
    evaluator = DriftEvaluator(rule, bucket_s=60)
    rng = np.random.default_rng(7)
    alerts = []
    for b in range(240 + within_minutes + 30):
        n = 50
        level = 0.95 if b < 240 else 0.85
        rows = SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
                                    client=np.array(["c"] * n, dtype=object), ts=np.full(n, b * 60.0),
                                    flags={"events": np.ones(n, bool), "clean_events": np.ones(n, bool)},
                                    confidence=np.clip(rng.normal(level, 0.05, n), 0, 1))
        evaluator.ingest(rows)
        alerts += evaluator.evaluate(end_bucket=b + 1)
    fired = [a for a in alerts if a.status == "firing"]
    assert fired and fired[0].fired_at >= 240 * 60, [a.fired_at / 60 for a in fired]  # nothing before the drop
    assert fired[0].fired_at <= (240 + within_minutes) * 60
    assert evaluator.statistics["m"]["value"] < 0.9
