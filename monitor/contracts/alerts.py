"""The alert contract (topic ``alerts``; JSON Lines from ``advmon replay``).

>>> a = Alert.firing(rule="anomaly/page", slo="anomaly", severity="page", model="m", client_id=None,
...     sli="input_anomaly_rate", objective=0.99, burn_rates={"1h": 20.0, "5m": 30.0}, windows=["1h", "5m"],
...     first_event_ts=100.0, fired_at=400.0, summary="s", runbook_url="docs/runbooks.md#anomaly")
>>> a.time_to_detect_s, a.status, a.resolve(at=900.0).dedup_key == a.dedup_key
(300.0, 'firing', True)
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


def alert_name(rule_name: str, severity: str) -> str:
    """Alertmanager's ``alertname``: the same for a daemon alert and the Prometheus rule of the same SLO.

    >>> alert_name("query-attack", "ticket")
    'AdvmonQueryAttackTicket'
    """
    parts = rule_name.replace("_", "-").split("-")
    return "Advmon" + "".join(part.capitalize() for part in parts) + severity.capitalize()


def dedup_key_for(slo: str, severity: str, model: str, client_id: str | None) -> str:
    """Stable across trigger and resolve (PagerDuty ``dedup_key``, Opsgenie ``alias``)."""
    return hashlib.sha256(f"{slo}|{severity}|{model}|{client_id or ''}".encode()).hexdigest()[:32]


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str
    dedup_key: str
    status: Literal["firing", "resolved"]
    severity: Literal["page", "ticket"]
    rule: str
    slo: str
    model: str
    client_id: str | None = None
    sli: str
    objective: float | None = None
    burn_rates: dict[str, float] = Field(default_factory=dict)
    windows: list[str] = Field(default_factory=list)
    first_event_ts: float | None = None
    fired_at: float
    resolved_at: float | None = None
    time_to_detect_s: float | None = None
    fingerprints: list[str] = Field(default_factory=list)
    sample_event_ids: list[str] = Field(default_factory=list)
    #: What made the client (or the model, or a group of keys) stand out: per statistic the client's value,
    #: the population's in the same minutes, the rank-test effect (AUC) and z, the queries counted; and
    #: ``keys`` when the alert is about a group of clients.
    evidence: dict[str, Any] = Field(default_factory=dict)
    summary: str
    runbook_url: str = ""
    #: The rule's own labels (team, service, ...): routes and Alertmanager match on them with the rest.
    rule_labels: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def firing(cls, subject: str | None = None, **fields) -> Alert:
        """A new firing alert; ``subject`` names what it is about where the client does not (a group of keys)."""
        dedup = dedup_key_for(fields["slo"], fields["severity"], fields["model"], fields.get("client_id") or subject)
        first = fields.get("first_event_ts")
        ttd = None if first is None else max(0.0, fields["fired_at"] - first)
        return cls(alert_id=_alert_id(dedup, "firing", fields["fired_at"]), dedup_key=dedup, status="firing",
                   time_to_detect_s=ttd, **fields)

    def updated(self, at: float, **changes) -> Alert:
        """The same firing incident with new content (a group that gained keys): same dedup key, a new id, so
        the notification path sends it as an update instead of dropping it as a repeat."""
        return self.model_copy(update={**changes, "alert_id": _alert_id(self.dedup_key, "updated", at)})

    def resolve(self, at: float, summary: str | None = None) -> Alert:
        return self.model_copy(update={
            "status": "resolved", "resolved_at": at, "alert_id": _alert_id(self.dedup_key, "resolved", at),
            "summary": summary or self.summary,
        })

    @property
    def alertname(self) -> str:
        return alert_name(self.slo, self.severity)

    @property
    def labels(self) -> dict[str, str]:
        """The labels routes, groups and inhibitions match on."""
        return {**self.rule_labels, "rule": self.rule, "slo": self.slo, "severity": self.severity, "model": self.model,
                "client_id": self.client_id or "", "sli": self.sli}

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())


def _alert_id(dedup_key: str, status: str, at: float) -> str:
    return hashlib.sha256(f"{dedup_key}|{status}|{at:.3f}".encode()).hexdigest()[:24]
