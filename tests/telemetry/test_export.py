"""What the alerter exports: alerts firing count every partition a process evaluates, not the last one's."""

from monitor.alerting.alerter import Alerter
from monitor.contracts.alerts import Alert
from monitor.spec.rules import load_rules_text
from monitor.telemetry.export import export_alert_state
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
