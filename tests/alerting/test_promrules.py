"""The Prometheus rules ``advmon rules render`` writes: valid for the real promtool, current in deploy/,
and firing when the daemon's own evaluator fires on the same series (``promtool test rules``)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.alerting.promrules import alert_name, render_prometheus_rules
from monitor.alerting.slo import SloEvaluator
from monitor.contracts.sli import SliRows
from monitor.spec.rules import RulesError, default_rules_dir, load_rules, load_rules_text
from monitor.spec.yaml_dump import dump_yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = ROOT / "deploy/prometheus/rules/advmon-slos.yml"


def promtool(*args, cwd):
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_deployed_rules_are_rendered_from_the_shipped_rules_and_pass_promtool_check():
    rendered = subprocess.run(["advmon", "rules", "render", str(default_rules_dir())], capture_output=True,
                              text=True, check=True).stdout
    assert DEPLOYED.read_text() == rendered, "run: advmon rules render rules -o deploy/prometheus/rules/advmon-slos.yml"
    result = promtool("check", "rules", str(DEPLOYED), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert "rules/advmon-slos.yml" in prometheus["rule_files"]


def daemon_firing(slo, bad, total):
    """Minute by minute, whether the daemon's evaluator has the model's alert firing at the minute's end."""
    evaluator = SloEvaluator(slo, bucket_s=60)
    firing = []
    for minute, (b, n) in enumerate(zip(bad, total, strict=True)):
        events = int(n)
        evaluator.ingest(SliRows.from_columns(
            bucket=np.full(events, minute * 60), model=np.full(events, "m", dtype=object),
            client=np.full(events, "c", dtype=object), ts=np.full(events, minute * 60.0),
            flags={"traffic_events": np.ones(events, bool), "anomalous": np.arange(events) < b},
            confidence=np.ones(events)))
        evaluator.evaluate(end_bucket=minute + 1)
        firing.append(bool(evaluator.firing))
    return firing


def test_prometheus_fires_when_the_daemon_fires(tmp_path):
    rules = load_rules_text("""
slos:
runbook_base: https://git.example/ml/advmon/blob/main/
slos:
  - {name: attack, sli: input_anomaly_rate, objective: 0.99, min_events: 100, resolve_after: 10m,
     severities: [page], summary: "{model}: adversarial inputs", runbook: docs/runbooks.md#attack,
     labels: {team: ml-sec}}
""")
    slo = rules.slos[0]
    minutes = 240
    total = np.full(minutes, 100)
    bad = np.where((np.arange(minutes) >= 60) & (np.arange(minutes) < 150), 30, 0)
    bad[200:205] = 80  # a short, sharp burst: the 5m window alone is not enough without the 1h one
    daemon = daemon_firing(slo, bad, total)
    assert any(daemon) and not all(daemon)

    (tmp_path / "rules.yml").write_text(dump_yaml(render_prometheus_rules(rules)))

    def cumulative(counts):  # the counter's value at minute k counts the buckets before k
        return " ".join(str(int(v)) for v in np.r_[0, np.cumsum(counts)])

    tests, checked = [], 0
    for end in range(5, minutes + 1, 5):  # the daemon's state at the end of minute end-1 is Prometheus' at end
        state = daemon[end - 1]
        if len(set(daemon[max(0, end - 4):min(minutes, end + 2)])) > 1:
            continue  # a transition minute: rate()'s extrapolation may land it a minute apart
        expected = [{"exp_labels": {"severity": "page", "slo": "attack", "model": "m", "team": "ml-sec",
                                    "sloth_severity": "page", "sloth_id": "advmon-attack", "sloth_service": "advmon",
                                    "sloth_slo": "attack"},
                     "exp_annotations": {"summary": "m: adversarial inputs", "runbook_url":
                                         "https://git.example/ml/advmon/blob/main/docs/runbooks.md#attack"}}]
        tests.append(
            {"eval_time": f"{end}m", "alertname": alert_name(slo, "page"), "exp_alerts": expected if state else []}
        )
        checked += state
    assert checked >= 10 and len(tests) - checked >= 15  # both states are checked, many times
    fixture = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'advmon_sli_bad_events_total{sli="input_anomaly_rate", model="m"}', "values": cumulative(bad)},
            {"series": 'advmon_sli_events_total{sli="input_anomaly_rate", model="m"}', "values": cumulative(total)}],
        "alert_rule_test": tests,
        "promql_expr_test": [  # Sloth's metadata records, read by Sloth's dashboards
            {"expr": "slo:objective:ratio", "eval_time": "10m", "exp_samples": [{"value": 0.99, "labels": (
                'slo:objective:ratio{sloth_id="advmon-attack", sloth_service="advmon", sloth_slo="attack", '
                'slo="attack", team="ml-sec"}')}]},
            {"expr": 'slo:sli_error:ratio_rate1h{model="m"}', "eval_time": "150m", "exp_samples": [{"value": 0.3,
             "labels": 'slo:sli_error:ratio_rate1h{model="m", sloth_id="advmon-attack", sloth_service="advmon", '
                       'sloth_slo="attack", sloth_window="1h", slo="attack", team="ml-sec"}'}]}]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(fixture, sort_keys=False))
    result = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_query_index_that_reaches_back_less_than_the_floor_within_the_hour_files_a_ticket(tmp_path):
    """Three processes' look-back, a sample a minute: one with nothing forgotten (+Inf), one whose look-back swings
    between one and two generations of 10 and 20 minutes (its low point, right after a generation closes, is under
    the floor), one that never goes under the floor. Only the second's swing opens the ticket, which holds through
    its highs (the hour's lowest point counts) and closes an hour after the index was made larger."""
    (tmp_path / "rules.yml").write_text(dump_yaml(render_prometheus_rules(load_rules(default_rules_dir()))))
    swinging = " ".join(str(600 + 60 * (m % 10)) for m in range(60)) + " 1800+0x120"  # 1 h swinging, then larger
    expected = [{"exp_labels": {"severity": "ticket"}, "exp_annotations": {
        "summary": "an advmon query index reached back less than 15 minutes of event time in the last hour: "
                   "black-box probers who space their queries further apart are not matched",
        "runbook_url": "docs/runbooks.md#advmonfingerprintlookbackshort"}}]
    fixture = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'advmon_fingerprint_lookback_seconds{instance="fresh"}', "values": " ".join(["+Inf"] * 181)},
            {"series": 'advmon_fingerprint_lookback_seconds{instance="busy"}', "values": swinging},
            {"series": 'advmon_fingerprint_lookback_seconds{instance="sized"}', "values": "901+0x180"}],
        "alert_rule_test": [{"eval_time": f"{m}m", "alertname": "AdvmonFingerprintLookbackShort",
                             "exp_alerts": expected if firing else []}
                            for m, firing in ((3, False), (6, True), (45, True), (90, True), (125, False))]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(fixture, sort_keys=False))
    result = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_per_client_slos_do_not_render():
    rules = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99},"
                            " {name: b, sli: input_anomaly_rate, scope: client, objective: 0.99}]")
    rendered = {g["name"] for g in render_prometheus_rules(rules)["groups"]}
    assert rendered == {"advmon-slo-a", "advmon-slo-a-meta", "advmon-pipeline"}  # pipeline: advmon's no-traffic alert
    shipped = {g["name"] for g in render_prometheus_rules(load_rules(default_rules_dir()))["groups"]}
    assert "advmon-slo-profile-mismatch" in shipped


def test_alertmanager_config_carries_the_rendered_inhibition_and_passes_amtool():
    from monitor.alerting.promrules import render_inhibit_rules

    config_path = ROOT / "deploy/alertmanager/alertmanager.yml"
    assert yaml.safe_load(config_path.read_text())["inhibit_rules"] == render_inhibit_rules()
    if shutil.which("amtool") is None:
        pytest.fail("amtool is not installed (Debian package prometheus-alertmanager; .ci/run installs it)")
    result = subprocess.run(["amtool", "check-config", str(config_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_resource_carries_the_same_groups_and_passes_promtool(tmp_path):
    rendered = subprocess.run(["advmon", "rules", "render", str(default_rules_dir()), "--format", "prometheusrule"],
                              capture_output=True, text=True, check=True).stdout
    resource = yaml.safe_load(rendered)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["spec"] == render_prometheus_rules(load_rules(default_rules_dir()))
    (tmp_path / "groups.yml").write_text(dump_yaml(resource["spec"]))
    result = promtool("check", "rules", "groups.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_slo_labels_and_summary_templates_reach_the_daemons_alerts():
    rules = load_rules_text("""
runbook_base: https://git.example/ml/advmon/blob/main/
slos:
  - {name: attack, sli: input_anomaly_rate, objective: 0.99, min_events: 100, severities: [page],
     summary: "{model} sees adversarial inputs ({severity})", runbook: docs/runbooks.md#attack,
     labels: {team: ml-sec}}
""")
    evaluator = SloEvaluator(rules.slos[0], bucket_s=60)
    for minute in range(70):
        events = 100
        evaluator.ingest(SliRows.from_columns(
            bucket=np.full(events, minute * 60), model=np.full(events, "m", dtype=object),
            client=np.full(events, "c", dtype=object), ts=np.full(events, minute * 60.0),
            flags={"traffic_events": np.ones(events, bool), "anomalous": np.arange(events) < 40},
            confidence=np.ones(events)))
        evaluator.evaluate(end_bucket=minute + 1)
    [alert] = evaluator.firing
    assert alert.summary.startswith("m sees adversarial inputs (page): model m,")
    assert alert.runbook_url == "https://git.example/ml/advmon/blob/main/docs/runbooks.md#attack"
    assert alert.labels["team"] == "ml-sec" and alert.rule_labels == {"team": "ml-sec"}


def test_rule_labels_may_not_redefine_the_alerts_own():
    with pytest.raises(RulesError, match="labels severity are not allowed"):
        load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, labels: {severity: low}}]")
    with pytest.raises(RulesError, match=r"summary names \{client\}"):
        load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, summary: '{client} odd'}]")
