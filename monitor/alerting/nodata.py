"""The no-data state: a model that stops receiving traffic while the others go on.

Evaluated in event time, like everything else: a model whose last event is ``after`` older than the
evaluated minute fires (one alert per model), and resolves when its traffic is back. A complete
stop of all traffic stops event time too; that case is Prometheus' to catch (``advmon rules render``
adds ``AdvmonNoTraffic`` over the ingest counters).

>>> import numpy as np
>>> from monitor.spec.rules import NoDataRule
>>> from monitor.contracts.sli import SliRows
>>> ev = NoDataEvaluator(NoDataRule(name="no-traffic", after=600), bucket_s=60)
>>> def minute(b, models):
...     n = len(models); return SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(models, dtype=object),
...         client=np.array(["c"] * n, dtype=object), ts=np.full(n, b * 60.0),
...         flags={"events": np.ones(n, bool)}, confidence=np.ones(n))
>>> alerts = []
>>> for b in range(40):
...     ev.ingest(minute(b, ["a", "b"] if b < 10 or b >= 30 else ["a"])); alerts += ev.evaluate(end_bucket=b + 1)
>>> [(x.status, x.model, x.fired_at / 60, x.resolved_at and x.resolved_at / 60) for x in alerts]
[('firing', 'b', 20.0, None), ('resolved', 'b', 20.0, 31.0)]
"""

from __future__ import annotations

from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SliRows
from monitor.spec.rules import NoDataRule


class NoDataEvaluator:
    def __init__(self, rule: NoDataRule, bucket_s: int) -> None:
        self.rule = rule
        self.bucket_s = bucket_s
        self._last_bucket: dict[str, int] = {}  # model -> last bucket with events
        self._open: dict[str, Alert] = {}
        self.reads_totals = True
        self.client_history_s = 0.0

    @property
    def firing(self) -> list[Alert]:
        return list(self._open.values())

    def ingest(self, rows: SliRows) -> None:
        events = rows.column("events")
        for model, bucket, n in zip(rows.model, (rows.bucket // self.bucket_s).tolist(), events.tolist(), strict=True):
            if n > 0 and (not self.rule.models or model in self.rule.models):
                self._last_bucket[model] = max(bucket, self._last_bucket.get(model, bucket))

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        """At the end of bucket ``end_bucket - 1``: models silent for ``after`` fire, returning ones resolve."""
        now = float(end_bucket * self.bucket_s)
        alerts = []
        for model, last in self._last_bucket.items():
            silent_since = float((last + 1) * self.bucket_s)
            quiet = now - silent_since >= self.rule.after
            if quiet and model not in self._open:
                self._open[model] = alert = Alert.firing(
                    rule=f"{self.rule.name}/{self.rule.severity}", slo=self.rule.name, severity=self.rule.severity,
                    model=model, sli="events", first_event_ts=silent_since, fired_at=now,
                    summary=f"{self.rule.headline(model)}: model {model} has had no events since "
                            f"{self.rule.after // 60} min or more", runbook_url=self.rule.runbook,
                    rule_labels=self.rule.labels)
                alerts.append(alert)
            elif not quiet and model in self._open and last >= end_bucket - 1:
                alerts.append(
                    self._open.pop(model).resolve(at=now, summary=f"resolved: model {model} has traffic again")
                )
        return alerts
