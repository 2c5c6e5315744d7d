"""Every runbook link the shipped rules put into alerts lands on a section of docs/runbooks.md."""

import re
from pathlib import Path

from monitor.spec.rules import default_rules_dir, load_rules

ROOT = Path(__file__).resolve().parents[2]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M)}


def test_every_rule_links_to_an_existing_runbook_section():
    rules = load_rules(default_rules_dir())
    available = anchors((ROOT / "docs/runbooks.md").read_text())
    links = [r.runbook for r in (*rules.slos, *rules.drift, *rules.no_data)]
    assert links and all(link.startswith("docs/runbooks.md#") for link in links)
    missing = [link for link in links if link.split("#", 1)[1] not in available]
    assert not missing, missing


def test_prometheus_alerts_link_to_existing_runbook_sections():
    import yaml

    available = anchors((ROOT / "docs/runbooks.md").read_text())
    rendered = yaml.safe_load((ROOT / "deploy/prometheus/rules/advmon-slos.yml").read_text())
    links = [r["annotations"]["runbook_url"] for g in rendered["groups"] for r in g["rules"] if "alert" in r]
    assert links and all(link.split("#", 1)[1] in available for link in links)
