"""Security properties: raw inputs and secrets never leave in alerts, wire messages, evidence or logs
(raw inputs reach the forensics topic only when enabled), and hostile label values cannot blow up
the metrics endpoint's cardinality."""

import logging

import numpy as np
import orjson
from prometheus_client import generate_latest

from monitor.contracts.sli_buckets import SliBatch
from monitor.detect.parsing import parse_batch
from monitor.runtime.inprocess import InProcessRuntime
from monitor.settings import Settings
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics
from streams.ingest import with_raw_inputs

FINGERPRINT_SECRET = "fp-s3cret-8d1c7e"
TEXT = "my password is hunter2"
MARK = 0.123456789  # a feature value no derived figure would produce by chance

RULES = load_rules_text("""
slos:
  - {name: probe, sli: near_duplicate_query_rate, scope: client, objective: 0.99, min_events: 20, severities: [page]}
  - {name: anomaly, sli: input_anomaly_rate, scope: model, objective: 0.99, min_events: 20, severities: [page]}
""")


class Collect:
    name = "stdout"  # the default route's receiver

    def __init__(self):
        self.notifications = []

    def send(self, notification):
        self.notifications.append(notification)


def probing_records(n=400):
    """One client probing with near-identical inputs that carry private text and a marked value."""
    rng = np.random.default_rng(0)
    base = rng.random(64)
    base[0] = MARK
    records = []
    for i in range(n):
        features = np.clip(base + rng.normal(0, 0.002, 64), 0, 1)
        features[0] = MARK
        records.append(orjson.dumps({
            "event_id": f"e{i}", "ts": 1795600800 + i, "client_id": "key_probe", "model": "m",
            "prediction": {"label": "3", "confidence": 0.6},
            "input": {"features": features.tolist(), "text": TEXT}}))
    return records


def run(records, caplog):
    results, alerts = [], []
    sink = Collect()
    with caplog.at_level(logging.DEBUG):
        runtime = InProcessRuntime.build(Settings(fingerprint_secret=FINGERPRINT_SECRET), RULES, [sink],
                                         on_batch=results.append, on_alerts=alerts.extend)
        for start in range(0, len(records), 100):
            runtime.feed(records[start:start + 100])
        runtime.finish()
    return runtime, results, sink


def test_raw_inputs_and_secrets_stay_out_of_alerts_wire_and_logs(caplog):
    runtime, results, sink = run(probing_records(), caplog)
    assert runtime.stats.alerts and sink.notifications  # the probe was caught: there is output to inspect
    flagged = sum(len(r.flagged) for r in results)
    assert flagged > 100
    outputs = [a.to_json() for a in runtime.stats.alerts]
    outputs += [SliBatch("i", r.watermark, 0, {}, r.rows, r.flagged).encode() for r in results]
    outputs += [orjson.dumps(doc) for r in results for doc in r.flagged.records()]
    outputs += [caplog.text.encode(), generate_latest(runtime.metrics.registry)]
    for blob in outputs:
        for secret in (TEXT, "hunter2", str(MARK), "0.12345679", FINGERPRINT_SECRET):
            assert secret.encode() not in blob, (secret, blob[:300])


def test_raw_inputs_reach_the_forensics_topic_only_when_enabled(caplog):
    records = probing_records()
    runtime, results, _ = run(records, caplog)
    result = results[-1]
    parsed = parse_batch(records[-100:])
    docs = result.flagged.records()
    assert docs and all("input" not in d for d in docs)
    kept = with_raw_inputs(result.flagged.records(), records[-100:], parsed)
    assert all(d["input"]["text"] == TEXT and d["input"]["features"][0] == MARK for d in kept)


def test_hostile_label_values_cannot_explode_metric_cardinality():
    """10,000 distinct models and clients: label values stay within the caps (client ids only hashed)."""
    n = 10_000
    records = [orjson.dumps({"event_id": f"e{i}", "ts": 1795600800 + i // 100, "client_id": f"attacker-{i}",
                             "model": f"model-{i}", "prediction": {"label": str(i), "confidence": 0.5}})
               for i in range(n)]
    rules = load_rules_text("slos: [{name: c, sli: input_anomaly_rate, scope: client, objective: 0.99, min_events: 1}]")
    metrics = Metrics(model_limit=50, client_limit=20)
    runtime = InProcessRuntime.build(Settings(), rules, [], metrics=metrics)
    for start in range(0, n, 1000):
        runtime.feed(records[start:start + 1000])
    runtime.finish()
    models, clients, series = set(), set(), 0
    for family in metrics.registry.collect():
        for sample in family.samples:
            series += 1
            models.add(sample.labels.get("model"))
            clients.add(sample.labels.get("client_hash"))
    assert len(models - {None}) <= 51 and len(clients - {None}) <= 21
    assert series < 20_000
    text = generate_latest(metrics.registry).decode()
    assert "attacker-" not in text and "model-9999" not in text
