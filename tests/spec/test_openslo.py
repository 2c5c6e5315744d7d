"""OpenSLO export and import through the CLI: the shipped SLOs survive the round trip; foreign SLIs are refused."""

import subprocess

import pytest
import yaml

from monitor.errors import RulesError
from monitor.spec.openslo import import_openslo
from monitor.spec.rules import default_rules_dir, load_rules, load_rules_text


def advmon(*args):
    return subprocess.run(["advmon", *args], capture_output=True, text=True, timeout=120)


def test_shipped_slos_round_trip_through_openslo(tmp_path):
    exported = tmp_path / "slos.openslo.yaml"
    rendered = advmon("rules", "render", str(default_rules_dir()), "--format", "openslo", "-o", str(exported))
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(exported.read_text()) if d]
    shipped = load_rules(default_rules_dir())
    assert [d["metadata"]["name"] for d in documents] == [s.name for s in shipped.slos]
    assert all(d["apiVersion"] == "openslo/v1" and d["spec"]["budgetingMethod"] == "Occurrences" for d in documents)
    imported = advmon("rules", "import-openslo", str(exported))
    assert imported.returncode == 0, imported.stderr
    assert load_rules_text(imported.stdout).slos == shipped.slos


def test_labels_runbooks_and_periods_survive_the_round_trip():
    rules = load_rules_text("""
runbook_base: https://git.example/ml/advmon/blob/main/
slos:
  - {name: attack, sli: input_anomaly_rate, scope: client, objective: 0.995, period: 7d, labels: {team: ml-sec},
     summary: "{model}: adversarial inputs", runbook: docs/runbooks.md#attack, severities: [page]}
""")
    from monitor.spec.openslo import export_openslo

    [document] = export_openslo(rules)
    assert document["spec"]["timeWindow"] == [{"duration": "1w", "isRolling": True}]
    assert load_rules_text(yaml.safe_dump({"slos": import_openslo([document])})).slos == rules.slos


def test_an_indicator_advmon_does_not_compute_is_refused_with_its_name():
    foreign = {"apiVersion": "openslo/v1", "kind": "SLO", "metadata": {"name": "http-availability"},
               "spec": {"service": "web", "indicator": {"spec": {"ratioMetric": {"counter": True,
                        "bad": {"metricSource": {"type": "Prometheus", "spec": {"query": "sum(http_errors_total)"}}},
                        "total": {"metricSource": {"type": "Prometheus", "spec": {"query": "sum(http_total)"}}}}}},
                        "timeWindow": [{"duration": "28d", "isRolling": True}], "budgetingMethod": "Occurrences",
                        "objectives": [{"target": 0.999}]}}
    with pytest.raises(RulesError, match="http-availability: its indicator is not a ratio over advmon_sli"):
        import_openslo([foreign, {"kind": "Service"}])
    assert import_openslo([{"kind": "Service", "metadata": {"name": "web"}}]) == []
