"""Query SLIs: per-client query entropy and rate that separate a black-box prober from benign
clients, mergeable across batches, exported per closed bucket; drift series on them and on clean accuracy."""

import numpy as np
import pytest

from monitor.alerting.alerter import Alerter
from monitor.alerting.drift import DriftEvaluator
from monitor.contracts.sli import SliRows, series_values
from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.parsing import parse_batch
from monitor.runtime.inprocess import export_alert_state
from monitor.sim.synth import Scenario
from monitor.spec.rules import DriftRule, RulesError, default_rules_dir, load_rules, load_rules_text
from monitor.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def minute_rows():
    """Every (minute, model, client) row of 2 hours of demo traffic, merged from 5-minute batches."""
    scenario = Scenario.build(seed=1, duration_s=2 * 3600.0)
    engine = Engine(EngineSettings(fingerprint_secret=b"s"), scenario.reference_profile(per_model=1000))
    rows = [engine.process(parse_batch(chunk.records).batch).rows for chunk in scenario.chunks(chunk_s=300.0)]
    return SliRows.concat(rows).combined()


def per_client(rows, kind, client_filter):
    mine = np.array([client_filter(c) for c in rows.client])
    entropy, counted = series_values(f"{kind}_entropy", rows.values[mine], 60)
    return entropy[counted >= 10]


@pytest.mark.parametrize("kind", ["label", "input"])
def test_black_box_prober_has_low_query_entropy(minute_rows, kind):
    attacker = per_client(minute_rows, kind, lambda c: c == "key_bb_4410")
    benign = per_client(minute_rows, kind, lambda c: c.startswith("key_") and "_" not in c[4:])
    assert len(attacker) >= 10 and len(benign) >= 50
    assert np.median(attacker) < 0.5 * np.median(benign), (np.median(attacker), np.median(benign))
    assert np.median(benign) > 1.5  # diverse digits and inputs spread over the bins


def test_entropy_is_mergeable_across_batches():
    """Histograms add, so the entropy of merged rows is the entropy of all events at once."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 400)
    def rows(part):
        n = len(part)
        return SliRows.from_columns(bucket=np.zeros(n, np.int64), model=np.full(n, "m", object),
                                    client=np.full(n, "c", object), ts=np.zeros(n), flags={"events": np.ones(n, bool)},
                                    confidence=np.ones(n), bins={"label": part})
    whole = rows(labels).entropy_bits("label")
    merged = SliRows.concat([rows(labels[:150]), rows(labels[150:])]).combined().entropy_bits("label")
    np.testing.assert_allclose(merged, whole)
    counts = np.bincount(labels, minlength=8) / len(labels)
    np.testing.assert_allclose(whole, [-(counts * np.log2(counts)).sum()])


def test_closed_buckets_export_client_distributions(minute_rows):
    rules = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99}]")
    alerter, metrics = Alerter(rules, bucket_s=60, grace_s=0), Metrics()
    alerter.ingest(minute_rows)
    alerter.advance(float(minute_rows.bucket.max()) + 120)
    export_alert_state(metrics, alerter)
    get = metrics.registry.get_sample_value
    busy = per_client(minute_rows, "label", lambda c: True)
    assert get("advmon_client_query_entropy_bits_count", {"model": "digits-mlp", "kind": "label"}) > 0
    total = sum(get("advmon_client_query_entropy_bits_count", {"model": m, "kind": "label"}) or 0
                for m in np.unique(minute_rows.model.astype(str)))
    assert total == len(busy)
    clients = (minute_rows.column("traffic_events") > 0).sum()
    assert sum(get("advmon_client_query_rate_count", {"model": m}) or 0
               for m in np.unique(minute_rows.model.astype(str))) == clients
    export_alert_state(metrics, alerter)  # nothing closed since: nothing observed twice
    assert sum(get("advmon_client_query_entropy_bits_count", {"model": m, "kind": "label"}) or 0
               for m in np.unique(minute_rows.model.astype(str))) == total


def test_drift_on_query_rate_sees_a_traffic_surge():
    rule = DriftRule(name="rate", series="query_rate", detector="page_hinkley", delta=0.05, threshold=5.0,
                     min_events=1, grace_points=10)
    evaluator = DriftEvaluator(rule, bucket_s=60)
    alerts = []
    for minute in range(120):
        n = 300 if minute < 90 else 1200
        evaluator.ingest(SliRows.from_columns(
            bucket=np.full(n, minute * 60), model=np.full(n, "m", object), client=np.full(n, "c", object),
            ts=np.full(n, minute * 60.0), flags={"events": np.ones(n, bool), "traffic_events": np.ones(n, bool)},
            confidence=np.ones(n)))
        alerts += evaluator.evaluate(end_bucket=minute + 1)
    assert [a.status for a in alerts] == ["firing"] and 90 * 60 <= alerts[0].fired_at <= 95 * 60
    assert evaluator.statistics["m"]["value"] == pytest.approx(20.0)  # 1200 queries per minute


def test_unknown_drift_series_is_refused():
    with pytest.raises(RulesError, match="unknown series 'label_entropyy'"):
        load_rules_text("drift: [{name: d, series: label_entropyy}]")


def labelled_minute(minute, n, accuracy, rng):
    correct = rng.random(n) < accuracy
    return SliRows.from_columns(
        bucket=np.full(n, minute * 60), model=np.full(n, "m", object), client=np.full(n, "c", object),
        ts=np.full(n, minute * 60.0), confidence=np.ones(n),
        flags={"events": np.ones(n, bool), "labelled": np.ones(n, bool), "errors": ~correct})


@pytest.mark.parametrize("drop_to,fires", [(0.85, True), (0.97, False)])
def test_shipped_clean_accuracy_rule_sees_an_accuracy_drop(drop_to, fires):
    rule = next(r for r in load_rules(default_rules_dir()).drift if r.name == "clean-accuracy-change")
    evaluator, rng, alerts = DriftEvaluator(rule, bucket_s=60), np.random.default_rng(0), []
    for minute in range(6 * 60):  # 60 labelled events a minute; accuracy 97%, then `drop_to` after 3 hours
        evaluator.ingest(labelled_minute(minute, 60, 0.97 if minute < 180 else drop_to, rng))
        alerts += evaluator.evaluate(end_bucket=minute + 1)
    firing = [a for a in alerts if a.status == "firing"]
    if fires:
        assert firing and 180 * 60 < firing[0].fired_at <= 200 * 60, [a.fired_at / 60 for a in firing]
    else:
        assert not firing, [a.fired_at / 60 for a in firing]
