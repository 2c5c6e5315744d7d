"""The alerter's durable state: redelivery and crashes at any write neither lose nor invent alerts."""

import numpy as np
import pytest

from monitor.alerting.durable import DurableAlerter
from monitor.contracts.sli import SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import load_rules_text

RULES = load_rules_text("""
slos:
  - {name: anomaly, sli: input_anomaly_rate, objective: 0.99, min_events: 20, scope: client, severities: [page]}
  - {name: anomaly-model, sli: input_anomaly_rate, objective: 0.999, min_events: 20}
drift:
  - {name: drift, detector: page_hinkley, series: clean_confidence_mean, delta: 0.005, threshold: 0.2}
""")


def stream(seed=0, minutes=240):
    """Per-minute batches from two ingest instances: three clients, an attack burst, a confidence drop."""
    rng = np.random.default_rng(seed)
    batches = []
    for minute in range(minutes):
        for instance in ("ingest-0", "ingest-1"):
            n = 60
            ts = minute * 60 + np.sort(rng.uniform(0, 60, n))
            client = rng.choice(np.array(["a", "b", "attacker"], dtype=object), n)
            attack = (client == "attacker") & (60 <= minute < 90)
            anomalous = attack | (rng.random(n) < 0.002)
            confidence = np.clip(rng.normal(0.95 if minute < 150 else 0.75, 0.03, n), 0, 1)
            rows = SliRows.from_columns(
                bucket=(ts // 60).astype(np.int64) * 60, model=np.full(n, "m", dtype=object), client=client, ts=ts,
                flags={"events": np.ones(n, bool), "traffic_events": np.ones(n, bool), "anomalous": anomalous,
                       "clean_events": ~anomalous}, confidence=confidence)
            batches.append(SliBatch(instance, float(ts.max()), 0, {"inference-logs/0": (0, n)}, rows))
    return batches


def run(batches, store, start=0):
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    return [a for offset, batch in enumerate(batches) if offset >= start for a in alerter.apply(offset, batch, now=0.0)]


class CrashingStore(dict):
    """A store whose process dies after ``writes`` writes."""

    def __init__(self, writes):
        super().__init__()
        self.left = writes

    def __setitem__(self, key, value):
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1
        super().__setitem__(key, value)


def test_uninterrupted_run_fires_and_resolves():
    alerts = run(stream(), {})
    rules = {(a.rule, a.status, a.client_id) for a in alerts}
    assert ("anomaly/page", "firing", "attacker") in rules and ("anomaly/page", "resolved", "attacker") in rules
    assert any(a.rule == "drift/ticket" for a in alerts)
    assert not any(a.client_id in ("a", "b") for a in alerts)


@pytest.mark.parametrize("writes", [1, 7, 300, 801, 1502, 2390])
def test_crash_at_any_write_then_redelivery_gives_the_same_alerts(writes):
    batches = stream()
    reference_store = {}
    reference = run(batches, reference_store)
    store = CrashingStore(writes)
    before = []
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    with pytest.raises(SystemExit):
        for offset, batch in enumerate(batches):
            before += alerter.apply(offset, batch, now=0.0)
    crashed_at = offset
    store.left = -1  # the restarted process writes freely
    committed = max(0, crashed_at - 5)  # the consumer resumes from an older committed offset
    after = run(batches, store, start=committed)
    assert [a.alert_id for a in before] + [
        a.alert_id for a in after if a.alert_id not in {b.alert_id for b in before}
    ] == [a.alert_id for a in reference]
    buckets = {k: v["v"] for k, v in store.items() if k.startswith("b")}
    assert buckets == {k: v["v"] for k, v in reference_store.items() if k.startswith("b")}  # every event once
    repeated = [a for a in after if a.alert_id in {b.alert_id for b in before}]
    assert all(a.fired_at >= (crashed_at - 1) * 30 for a in repeated)  # only the message in flight can repeat


def test_restart_rebuilds_open_alerts_and_expires_old_buckets():
    batches = stream()
    store = {}
    first = run(batches[:150], store)
    assert any(a.status == "firing" and a.client_id == "attacker" for a in first)
    restarted = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert {a.client_id for a in restarted.firing} >= {"attacker"}
    assert restarted.apply(149, batches[149], now=0.0) == []  # already applied before the restart
    for offset in range(150, len(batches)):
        restarted.apply(offset, batches[offset], now=0.0)
    assert sum(k.startswith("b") for k in store) <= 3 * (restarted.retention_s // 60 + 5)


def test_watermark_is_the_slowest_live_instance():
    store = {}
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=30)
    batches = stream(minutes=3)
    alerter.apply(0, batches[0], now=0.0)   # ingest-0 at minute 0
    alerter.apply(1, batches[3], now=0.0)   # ingest-1 already at minute 1
    assert alerter.watermark(now=0.0) == batches[0].watermark
    assert alerter.watermark(now=100.0) == float("-inf")  # both silent for longer than idle_source_s


def test_windows_wait_for_the_scorer_while_ingest_leaves_embeddings_to_it():
    from dataclasses import replace

    batches = stream(minutes=3)
    alerter = DurableAlerter(RULES, {}, bucket_s=60, grace_s=60, idle_source_s=30)
    alerter.apply(0, replace(batches[0], remote_scoring=True), now=0.0)
    assert alerter.watermark(now=0.0) == float("-inf")  # no scorer has reported yet
    scorer = replace(batches[1], instance="scorer-0", role="scorer", watermark=batches[0].watermark - 30)
    alerter.apply(0, scorer, now=0.0, topic="scores")  # its own topic: offsets count apart from sli-buckets
    assert alerter.watermark(now=0.0) == batches[0].watermark - 30  # the scorer is the slowest source
    assert alerter.apply(0, scorer, now=0.0, topic="scores") == [] and alerter.skipped_messages == 1
