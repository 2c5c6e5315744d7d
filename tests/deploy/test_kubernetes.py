"""The Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate, strict) and
agree with the code: commands the CLI accepts, probes on the health endpoints, stable instance ids."""

import subprocess
import sys
from pathlib import Path

import yaml

from monitor.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))


def documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_manifests_validate_strictly_against_the_kubernetes_schemas():
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
                             *map(str, MANIFESTS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_daemons_run_real_commands_with_probes_and_stable_instance_ids():
    parser = build_parser()
    workloads = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "StatefulSet"}
    assert set(workloads) == {"advmon-ingest", "advmon-alerter", "advmon-scorer"}
    for workload in workloads.values():
        [container] = workload["spec"]["template"]["spec"]["containers"]
        parser.parse_args(container["args"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        instance = next(e for e in container["env"] if e["name"] == "ADVMON_INSTANCE_ID")
        assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    scorer = workloads["advmon-scorer"]["spec"]["template"]["spec"]["containers"][0]
    assert scorer["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_rules_config_map_is_the_shipped_rules():
    [config_map] = [d for d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "advmon-rules"]
    assert config_map["data"]["slos.yaml"] == (ROOT / "rules/slos.yaml").read_text(), \
        "run: python3 deploy/kubernetes/build_rules_configmap.py"
