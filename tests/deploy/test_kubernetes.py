"""The Kubernetes kustomization builds with the real kubectl, its resources validate against the Kubernetes
schemas (kubernetes-validate, strict), and it agrees with the code: commands the CLI accepts, probes on the
health endpoints, stable instance ids, the shipped rules, a ServiceMonitor that finds every daemon, and a
PrometheusRule that is `advmon rules render --format prometheusrule`."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.cli import build_parser
from monitor.spec.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION = ROOT / "deploy/kubernetes"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator CRDs: no schema in kubernetes-validate


DAEMONS = {"advmon-ingest", "advmon-alerter", "advmon-scorer", "advmon-matcher", "advmon-match-shard"}


def built() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed (it builds the kustomization)")
    result = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZATION)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def documents():
    return built()


def test_built_resources_validate_strictly_against_the_kubernetes_schemas(tmp_path):
    core = [d for d in built() if d["kind"] not in OPERATOR_KINDS]
    assert {d["kind"] for d in core} == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_files_are_current():
    spec = importlib.util.spec_from_file_location("build_generated", KUSTOMIZATION / "build_generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.render().items():
        assert path.read_text() == text, "run: python3 deploy/kubernetes/build_generated.py"


def test_rules_config_map_holds_the_shipped_rules_and_routes_to_alertmanager(tmp_path):
    [config_map] = [d for d in built() if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("advmon-rules")]
    assert config_map["data"]["slos.yaml"] == (ROOT / "rules/slos.yaml").read_text()
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    rules = load_rules(tmp_path)
    assert [r.type for r in rules.receivers] == ["alertmanager-api"] and rules.routes[0].receivers == ("alertmanager",)
    alerter = next(d for d in built() if d["metadata"]["name"] == "advmon-alerter" and d["kind"] == "StatefulSet")
    volumes = alerter["spec"]["template"]["spec"]["volumes"]
    assert {"name": "rules", "configMap": {"name": config_map["metadata"]["name"]}} in volumes


def test_service_monitor_scrapes_every_daemon_and_prometheus_rule_is_rendered():
    resources = built()
    [monitor] = [d for d in resources if d["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in resources if d["kind"] == "Service"
                and selector.items() <= d["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in services} == DAEMONS
    [endpoint] = monitor["spec"]["endpoints"]
    assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
    [rule] = [d for d in resources if d["kind"] == "PrometheusRule"]
    rendered = subprocess.run(["advmon", "rules", "render", str(ROOT / "rules"), "--format", "prometheusrule"],
                              capture_output=True, text=True, check=True).stdout
    assert rule["spec"] == yaml.safe_load(rendered)["spec"]


def test_the_profile_reaches_each_pod_without_a_shared_volume():
    for workload in (d for d in built() if d["kind"] == "StatefulSet"):
        spec = workload["spec"]["template"]["spec"]
        assert all("persistentVolumeClaim" not in v for v in spec.get("volumes", []))
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        if workload["metadata"]["name"] in ("advmon-ingest", "advmon-scorer"):
            [init] = spec["initContainers"]
            assert init["image"].startswith("advmon-profile:")
            assert {"name": "profile", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
    assert (ROOT / "deploy/profile/Dockerfile").read_text().count("COPY profile.npz /profile/profile.npz") == 1


def test_daemons_run_real_commands_with_probes_and_stable_instance_ids():
    parser = build_parser()
    workloads = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "StatefulSet"}
    assert set(workloads) == DAEMONS
    for workload in workloads.values():
        [container] = workload["spec"]["template"]["spec"]["containers"]
        parser.parse_args(container["args"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        instance = next(e for e in container["env"] if e["name"] == "ADVMON_INSTANCE_ID")
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    shards = workloads["advmon-match-shard"]
    [config] = [d for d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "advmon-config"]
    assert shards["spec"]["replicas"] == int(config["data"]["ADVMON_MATCHER_SHARDS"]) > 1
    [shard] = shards["spec"]["template"]["spec"]["containers"]
    ordinal = next(e for e in shard["env"] if e["name"] == "ADVMON_MATCHER_SHARD")
    assert ordinal["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    [reduce] = workloads["advmon-matcher"]["spec"]["template"]["spec"]["containers"]
    assert reduce["args"] == ["matcher", "--shard", "reduce"]
    scorer = workloads["advmon-scorer"]["spec"]["template"]["spec"]["containers"][0]
    assert scorer["resources"]["limits"]["nvidia.com/gpu"] == 1
