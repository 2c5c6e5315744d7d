"""Rewrite rules.yaml (the ConfigMap advmon-rules) from the shipped rules/slos.yaml:
``python3 deploy/kubernetes/build_rules_configmap.py``. A test keeps the two equal."""

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def render() -> str:
    rules = (HERE.parent.parent / "rules/slos.yaml").read_text()
    document = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "advmon-rules", "labels": {"app.kubernetes.io/name": "advmon"}},
                "data": {"slos.yaml": rules}}
    return ("# The alert rules: rules/slos.yaml, copied by build_rules_configmap.py (edit there, then run it).\n"
            + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=200))


if __name__ == "__main__":
    (HERE / "rules.yaml").write_text(render())
    print(f"wrote {HERE / 'rules.yaml'}")
