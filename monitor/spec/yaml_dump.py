"""YAML written for people: multi-line strings (PromQL, embedded files) as literal blocks.

>>> print(dump_yaml({"expr": "a\\n/ b", "n": 1}), end="")
expr: |-
  a
  / b
n: 1
"""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def dump_yaml(document, width: int = 120) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=width)
