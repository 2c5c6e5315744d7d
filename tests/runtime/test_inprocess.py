"""The in-process runtime's own figures: how far back its query index reaches, on /metrics."""

import numpy as np
import orjson

from monitor.runtime.inprocess import InProcessRuntime
from monitor.settings import Settings
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics

RULES = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99}]")


def test_the_query_index_look_back_reaches_metrics_once_it_forgets():
    """A query a second, generations of 100 queries: nothing is forgotten over the first 200 (+Inf), then the index
    reaches back between one and two generations' spans."""
    rng = np.random.default_rng(0)
    records = [orjson.dumps({"event_id": f"e{i}", "ts": 1795600800 + i, "client_id": f"c{i % 7}", "model": "m",
                             "prediction": {"label": "1", "confidence": 0.9},
                             "input": {"features": rng.random(64).tolist()}}) for i in range(450)]
    metrics = Metrics()
    runtime = InProcessRuntime.build(Settings(fingerprint_generation_queries=100), RULES, [], metrics=metrics)
    seen = []
    for start in range(0, len(records), 50):
        runtime.feed(records[start:start + 50])
        seen.append(metrics.registry.get_sample_value("advmon_fingerprint_lookback_seconds"))
    assert seen[:3] == [np.inf] * 3  # 150 queries, two generations: all held
    assert 100 <= seen[-1] < 200 and seen[-1] == runtime.engine.fingerprint_lookback_s
