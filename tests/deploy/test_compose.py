"""docker-compose.yml is valid for the real compose tool and everything it points at exists."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.cli import build_parser
from monitor.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def compose_config(**environ) -> dict:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.fail("neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)")
    unset = ("ADVMON_REMOTE_SCORING", "ADVMON_REMOTE_MATCHING")
    env = {k: v for k, v in os.environ.items() if k not in unset} | environ
    result = subprocess.run([*command, "-f", "docker-compose.yml", "--profile", "gpu", "config"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_is_valid_and_complete():
    services = compose_config()["services"]
    assert {"kafka", "topics", "ingest", "alerter", "scorer", "producer", "prometheus", "alertmanager",
            "grafana"} <= set(services)
    parser = build_parser()
    for name, service in services.items():
        if service.get("image", "").startswith("advmon") and service.get("command"):
            parser.parse_args(service["command"])  # every daemon command is one the CLI accepts
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert str(published).startswith("127.0.0.1:"), (name, port)
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("/", ".")):
                assert Path(source).exists() or (ROOT / source).exists(), (name, source)
    assert (ROOT / services["ingest"]["build"]["context"] / "deploy/Dockerfile").exists()
    assert services["scorer"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_prometheus_scrapes_services_that_exist():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert targets and all(t.split(":")[0] in services for t in targets)


def test_dashboards_are_the_generators_output():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboards", ROOT / "deploy/grafana/build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert set(rendered) == {"executive.json", "oncall.json", "debug.json"}
    for name, text in rendered.items():
        assert (ROOT / "deploy/grafana/dashboards" / name).read_text() == text, "run deploy/grafana/build_dashboards.py"


def test_dashboards_query_only_metrics_the_code_exports():
    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {f"{m}_total" for m in exported} | {f"{m}_{s}" for m in exported for s in ("bucket", "sum", "count")}
    for path in (ROOT / "deploy/grafana/dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in re.findall(r"\badvmon_[a-z_]+", target["expr"]):
                    assert name in exported, (path.name, panel["title"], name)


def test_compose_alerter_loads_the_shipped_rules_with_the_alertmanager_route(tmp_path):
    from monitor.contracts.alerts import Alert
    from monitor.notify.pipeline import route
    from monitor.spec.rules import load_rules

    alerter = compose_config()["services"]["alerter"]
    mounts = dict((v["target"], v["source"]) if isinstance(v, dict) else v.split(":")[1::-1]
                  for v in alerter["volumes"])
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for target, source in mounts.items():
        if target.startswith("/etc/advmon/rules/"):
            (rules_dir / Path(target).name).write_text(Path(source).read_text())
    assert alerter["command"][alerter["command"].index("--rules") + 1] == "/etc/advmon/rules"
    rules = load_rules(rules_dir)
    [receiver] = [r for r in rules.receivers if r.type == "alertmanager-api"]
    assert receiver.url == "http://alertmanager:9093"
    page = Alert.firing(rule="client-standout", slo="client-standout", severity="page", model="m", client_id="c",
                        sli="margin_rank", fired_at=0.0, summary="s")
    assert [r.receivers for r in route(page, rules.routes)] == [("alertmanager",), ("stdout",)]


def test_gpu_profile_sends_ingest_embeddings_to_the_scorer():
    def remote(**environ):
        return str(compose_config(**environ)["services"]["ingest"]["environment"]["ADVMON_REMOTE_SCORING"]).lower()

    assert remote() == "false"  # no scorer runs without the profile: ingest scores embeddings itself
    assert remote(ADVMON_REMOTE_SCORING="true") == "true"


def test_two_ingest_workers_leave_matching_to_the_matcher():
    services = compose_config()["services"]
    workers = [s for s in services.values() if s.get("command") == ["ingest"]]
    assert sorted(w["environment"]["ADVMON_INSTANCE_ID"] for w in workers) == ["ingest-0", "ingest-1"]
    assert {str(w["environment"]["ADVMON_REMOTE_MATCHING"]).lower() for w in workers} == {"true"}
    assert services["matcher"]["command"] == ["matcher", "--shard", "reduce"]
    shards = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["matcher", "--shard"]}
    assert {str(s["environment"]["ADVMON_MATCHER_SHARDS"]) for s in shards.values()} == {"2"}
    assert sorted(s["command"][2] for s in shards.values()) == ["0", "1", "reduce"]
    off = compose_config(ADVMON_REMOTE_MATCHING="false")["services"]
    assert {str(off[name]["environment"]["ADVMON_REMOTE_MATCHING"]).lower() for name in ("ingest", "ingest-1")} == \
        {"false"}
