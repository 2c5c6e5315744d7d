"""What the runtimes export: a batch's counters per model and reason; alerts firing count every partition a process
evaluates, not the last one's."""

import numpy as np

from monitor.alerting.alerter import Alerter
from monitor.contracts.alerts import Alert
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import SliRows
from monitor.detect.engine import BatchResult, EventSignals
from monitor.detect.parsing import parse_batch
from monitor.spec.rules import load_rules_text
from monitor.telemetry.export import export_alert_state, observe_batch
from monitor.telemetry.metrics import Metrics

RULES = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, scope: client, "
                        "severities: [page]}]")


def firing(client):
    return Alert.firing(rule="a/page", slo="a", severity="page", model="m", client_id=client, sli="input_anomaly_rate",
                        fired_at=0.0, summary="s")


def test_alerts_firing_counts_what_every_partition_of_the_process_has_open():
    m = Metrics()
    shard = Alerter(RULES, role="clients")
    export_alert_state(m, shard)
    assert m.registry.get_sample_value("advmon_alerts_firing", {"slo": "a", "severity": "page"}) == 0.0
    export_alert_state(m, shard, [firing("x"), firing("y")])  # two open on other shards of this process
    assert m.registry.get_sample_value("advmon_alerts_firing", {"slo": "a", "severity": "page"}) == 2.0


def test_a_batch_counts_each_models_events_duplicates_and_flags_by_reason():
    models = np.array(["m", "n", "m", "m", "n"], dtype=object)
    flags = {"events": np.ones(5, bool), "duplicates": np.array([True, False, True, False, False])}
    rows = SliRows.from_columns(bucket=np.full(5, 60), model=models, client=np.array(list("abcab"), dtype=object),
                                ts=np.full(5, 61.0), flags=flags, confidence=np.full(5, 0.9))
    flagged = FlaggedEvents.of(["e1", "e2", "e3"], ["m", "n", "m"], ["a", "b", "c"], [61.0] * 3,
                               ["anomalous", "near-duplicate", "anomalous"], ["", "", ""])
    batch = parse_batch([b'{"event_id":"e%d","ts":61,"client_id":"c","model":"%s","prediction":{"label":"1",'
                         b'"confidence":0.9}}' % (i, model.encode()) for i, model in enumerate(models)]).batch
    result = BatchResult(rows, flagged, 61.0, 0, EventSignals.empty())
    m = Metrics()
    observe_batch(m, result, batch)
    observe_batch(m, result, batch)  # counters add up batch after batch
    value = m.registry.get_sample_value
    assert [value("advmon_events_total", {"model": x}) for x in "mn"] == [6.0, 4.0]
    assert value("advmon_duplicate_queries_total", {"model": "m"}) == 4.0
    assert value("advmon_duplicate_queries_total", {"model": "n"}) is None  # none: no series
    assert value("advmon_suspicious_events_total", {"model": "m", "reason": "anomalous"}) == 4.0
    assert value("advmon_suspicious_events_total", {"model": "n", "reason": "near-duplicate"}) == 2.0
    assert value("advmon_suspicious_events_total", {"model": "m", "reason": "near-duplicate"}) is None
    assert [value("advmon_prediction_confidence_count", {"model": x}) for x in "mn"] == [6.0, 4.0]
