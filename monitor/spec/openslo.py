"""SLOs as OpenSLO v1 documents, and back: ``advmon rules render --format openslo`` and ``advmon rules import-openslo``.

An advmon SLO becomes an OpenSLO ``SLO`` with an inline ratio indicator over the counters advmon exports
(``advmon_sli_bad_events_total`` / ``advmon_sli_events_total`` for its SLI), a rolling time window, an
``Occurrences`` budget, its objective as the target, its labels, and the summary as the description. What
OpenSLO has no field for (scope, ``min_events``, ``max_rate``, severities, ``resolve_after``, the burn-rate
window table, the runbook) travels in ``advmon.dev/*`` annotations, so export then import gives the same SLOs.
Importing a document that was not exported by advmon needs an indicator over those counters.

>>> from monitor.spec.rules import load_rules_text
>>> rules = load_rules_text("slos: [{name: attack, sli: input_anomaly_rate, objective: 0.99, labels: {team: sec}}]")
>>> [document] = export_openslo(rules)
>>> document["kind"], document["spec"]["objectives"], document["metadata"]["labels"]
('SLO', [{'target': 0.99}], {'team': 'sec'})
>>> import_openslo([document])
[{'name': 'attack', 'sli': 'input_anomaly_rate', 'objective': 0.99, 'labels': {'team': 'sec'}}]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from monitor.errors import RulesError
from monitor.spec.durations import format_duration, parse_duration
from monitor.spec.rules import Rules, Slo

PREFIX = "advmon.dev/"
_SLI_QUERY = re.compile(r'advmon_sli_bad_events_total\{[^}]*sli="([a-z_]+)"')
#: Slo fields carried in annotations: plain strings, or JSON for the rest.
_TEXT = ("scope", "max_rate", "resolve_after", "runbook")
_JSON = ("min_events", "severities", "windows")
#: The order of keys in an imported ``slos:`` entry (as the shipped rules write them).
_ORDER = ("name", "summary", "sli", "scope", "objective", "period", "max_rate", "min_events", "severities",
          "resolve_after", "windows", "labels", "runbook")


def _query(metric: str, sli: str) -> dict:
    return {"metricSource": {"type": "Prometheus", "spec": {"query": f'sum({metric}{{sli="{sli}"}})'}}}


def export_openslo(rules: Rules, service: str = "advmon") -> list[dict]:
    """One OpenSLO v1 ``SLO`` document per advmon SLO."""
    return [_export(slo, service) for slo in rules.slos]


def _export(slo: Slo, service: str) -> dict:
    fields = _readable(slo.model_dump(mode="json", exclude_defaults=True))
    annotations = {PREFIX + k.replace("_", "-"): fields[k] if k in _TEXT else json.dumps(fields[k])
                   for k in (*_TEXT, *_JSON) if k in fields}
    metadata: dict[str, Any] = {"name": slo.name}
    if slo.labels:
        metadata["labels"] = dict(slo.labels)
    if annotations:
        metadata["annotations"] = annotations
    spec = {"service": service,
            "indicator": {"metadata": {"name": f"{slo.name}-{slo.sli}"},
                          "spec": {"ratioMetric": {"counter": True,
                                                   "bad": _query("advmon_sli_bad_events_total", slo.sli),
                                                   "total": _query("advmon_sli_events_total", slo.sli)}}},
            "timeWindow": [{"duration": format_duration(slo.period), "isRolling": True}],
            "budgetingMethod": "Occurrences", "objectives": [{"target": slo.objective}]}
    if slo.summary:
        spec["description"] = slo.summary
    return {"apiVersion": "openslo/v1", "kind": "SLO", "metadata": metadata, "spec": spec}


def import_openslo(documents: Iterable[Any]) -> list[dict]:
    """The ``slos:`` entries (plain mappings, as in a rules file) of the OpenSLO v1 ``SLO`` documents;
    other kinds are skipped. Raises :class:`RulesError` naming the document that cannot be mapped."""
    out = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "SLO":
            continue
        name = str(document.get("metadata", {}).get("name", "?"))
        try:
            out.append(_import(document))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RulesError(f"OpenSLO SLO {name}: {exc}") from None
    return out


def _import(document: dict) -> dict:
    if document.get("apiVersion") != "openslo/v1":
        raise ValueError(f"apiVersion {document.get('apiVersion')!r} is not openslo/v1")
    metadata, spec = document["metadata"], document["spec"]
    ratio = spec.get("indicator", {}).get("spec", {}).get("ratioMetric") or {}
    query = ratio.get("bad", {}).get("metricSource", {}).get("spec", {}).get("query", "")
    match = _SLI_QUERY.search(query)
    if match is None:
        raise ValueError("its indicator is not a ratio over advmon_sli_bad_events_total{sli=...}: advmon "
                         "evaluates only the SLIs it computes")
    [window] = spec["timeWindow"]
    if not window.get("isRolling", False):
        raise ValueError("calendar time windows are not supported (advmon's budgets roll)")
    [objective] = spec["objectives"]
    target = objective["target"] if "target" in objective else objective["targetPercent"] / 100
    slo: dict[str, Any] = {"name": metadata["name"], "sli": match.group(1), "objective": target}
    period = parse_duration(window["duration"])
    if period != Slo.model_fields["period"].default:
        slo["period"] = format_duration(period)
    annotations = metadata.get("annotations") or {}
    for key in (*_TEXT, *_JSON):
        value = annotations.get(PREFIX + key.replace("_", "-"))
        if value is not None:
            slo[key] = value if key in _TEXT else json.loads(value)
    if metadata.get("labels"):
        slo["labels"] = {k: v if isinstance(v, str) else ",".join(v) for k, v in metadata["labels"].items()}
    if spec.get("description"):
        slo["summary"] = spec["description"]
    fields = _readable(Slo.model_validate(slo).model_dump(mode="json", exclude_defaults=True))
    return {k: fields[k] for k in sorted(fields, key=lambda k: _ORDER.index(k) if k in _ORDER else len(_ORDER))}


def _readable(fields: dict) -> dict:
    """Durations as ``1h``, ``30d``; window rows without unset fields: as a person writes a rules file."""
    out = dict(fields)
    for key in ("period", "resolve_after"):
        if key in out:
            out[key] = format_duration(out[key])
    if "windows" in out:
        out["windows"] = [{k: format_duration(v) if k in ("long", "short") else v for k, v in w.items()
                           if v is not None} for w in out["windows"]]
    return out
