"""Silences and maintenance windows: notifications of matching alert transitions are held back;
evaluation goes on (alerts fire, resolve and count in metrics as usual).

A silence is one span of time; a maintenance window repeats weekly (UTC). Both match alerts by
label equality, like Alertmanager matchers. Time is the alert transition's event time.

>>> from monitor.contracts.alerts import Alert
>>> a = Alert.firing(rule="r", slo="s", severity="page", model="m", client_id="c", sli="x",
...                  fired_at=1795600800.0, summary="s")          # Wednesday 2026-11-25 10:00 UTC
>>> Silence(matchers={"model": "m"}, starts=1795600000, ends=1795601000).mutes(a)
True
>>> Silence(matchers={"model": "other"}, starts=1795600000, ends=1795601000).mutes(a)
False
>>> MaintenanceWindow(matchers={}, weekday="wed", start="09:30", duration=3600).mutes(a)
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from monitor.contracts.alerts import Alert
from monitor.spec.durations import Duration

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def epoch(value) -> float:
    """RFC 3339 with a zone, or epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("needs a time zone")
        return value.timestamp()
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-25T10:00:00Z")
        return parsed.timestamp()
    raise ValueError("must be an RFC 3339 time or epoch seconds")


Instant = Annotated[float, BeforeValidator(epoch)]


class _Matching(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    matchers: dict[str, str] = Field(default_factory=dict)
    comment: str = ""
    created_by: str = ""

    def matches(self, alert: Alert) -> bool:
        labels = alert.labels
        return all(labels.get(k) == v for k, v in self.matchers.items())


class Silence(_Matching):
    starts: Instant
    ends: Instant

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self

    def mutes(self, alert: Alert) -> bool:
        at = alert.resolved_at if alert.resolved_at is not None else alert.fired_at
        return self.starts <= at < self.ends and self.matches(alert)


class MaintenanceWindow(_Matching):
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # UTC
    duration: Duration

    def mutes(self, alert: Alert) -> bool:
        at = alert.resolved_at if alert.resolved_at is not None else alert.fired_at
        moment = datetime.fromtimestamp(at, tz=timezone.utc)
        hour, minute = map(int, re.findall(r"\d+", self.start))
        week_s = 7 * 86400
        opens = WEEKDAYS.index(self.weekday) * 86400 + hour * 3600 + minute * 60
        now = moment.weekday() * 86400 + moment.hour * 3600 + moment.minute * 60 + moment.second
        return (now - opens) % week_s < self.duration and self.matches(alert)


def silenced(alerts: Sequence[Alert], rules: Sequence[Silence | MaintenanceWindow]) -> list[Alert]:
    """The alerts no silence or maintenance window mutes."""
    return [a for a in alerts if not any(rule.mutes(a) for rule in rules)]
