"""Rewrite rules.yaml (the ConfigMap advmon-rules) from the shipped rules/slos.yaml:
``python3 deploy/kubernetes/build_rules_configmap.py``. A test keeps the two equal."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from monitor.spec.yaml_dump import dump_yaml  # noqa: E402


def render() -> str:
    rules = (HERE.parent.parent / "rules/slos.yaml").read_text()
    document = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "advmon-rules", "labels": {"app.kubernetes.io/name": "advmon"}},
                "data": {"slos.yaml": rules}}
    return ("# The alert rules: rules/slos.yaml, copied by build_rules_configmap.py (edit there, then run it).\n"
            + dump_yaml(document, width=200))


if __name__ == "__main__":
    (HERE / "rules.yaml").write_text(render())
    print(f"wrote {HERE / 'rules.yaml'}")
