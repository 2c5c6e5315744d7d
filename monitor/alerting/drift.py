"""Online drift detection (river) on per-model, per-bucket series of clean traffic.

Each closed bucket gives one point per model (e.g. the mean confidence of events the detectors
did not flag, so attacks do not poison the reference). ADWIN or Page-Hinkley watch the series;
a detection fires a ticket that resolves after ``resolve_after`` without another detection.

>>> import numpy as np
>>> from monitor.spec.rules import DriftRule
>>> from monitor.contracts.sli import SliRows
>>> ev = DriftEvaluator(DriftRule(name="d", detector="page_hinkley", delta=0.005, threshold=0.2), bucket_s=60)
>>> def minute(b, conf):
...     n = 50; return SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
...         client=np.array(["c"] * n, dtype=object), ts=np.full(n, b * 60.0),
...         flags={"events": np.ones(n, bool), "clean_events": np.ones(n, bool)}, confidence=np.full(n, conf))
>>> alerts = []
>>> for b in range(200):
...     ev.ingest(minute(b, 0.95 if b < 120 else 0.7)); alerts += ev.evaluate(end_bucket=b + 1)
>>> [(a.status, a.model, a.fired_at - 120 * 60, a.time_to_detect_s) for a in alerts][:1]
[('firing', 'm', 60.0, 60.0)]
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np

from monitor.alerting.river_drift import drift_detector
from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SliRows, series_values
from monitor.spec.rules import DriftRule

RECENT_BUCKETS = 15  # per-client rows kept to tell a population shift from one client's


class DriftEvaluator:
    def __init__(self, rule: DriftRule, bucket_s: int) -> None:
        self.rule = rule
        self.bucket_s = bucket_s
        self._pending: dict[tuple[str, int], np.ndarray] = {}
        self._carry: dict[str, tuple[np.ndarray, int]] = {}  # model -> (summed values, buckets) not yet a point
        self._recent: dict[str, deque[SliRows]] = {}  # model -> its last RECENT_BUCKETS buckets, per client
        self._levels: dict[str, deque[float]] = {}  # model -> recent points, for the level before a change
        self._detectors: dict[str, Any] = {}  # river detectors: ADWIN | KSWIN | PageHinkley
        self._points: dict[str, int] = defaultdict(int)
        self._onset: dict[str, int] = {}  # model -> first bucket since the statistic was last at rest
        self._open: dict[str, Alert] = {}
        self._last_drift: dict[str, float] = {}
        self.reads_totals = True  # per-client rows only name the clients that moved, from the last few buckets
        self.client_history_s = float(RECENT_BUCKETS * bucket_s)
        self.statistics: dict[str, dict[str, float]] = {}

    @property
    def firing(self) -> list[Alert]:
        return list(self._open.values())

    def _new_detector(self):
        if self.rule.detector == "adwin":
            return drift_detector("ADWIN")(delta=self.rule.delta)
        if self.rule.detector == "kswin":
            return drift_detector("KSWIN")(alpha=self.rule.alpha, window_size=self.rule.window_size,
                                           stat_size=self.rule.stat_size, seed=0)
        return drift_detector("PageHinkley")(min_instances=self.rule.grace_points, delta=self.rule.delta,
                                             threshold=self.rule.threshold, mode="both")

    def ingest(self, rows: SliRows) -> None:
        for key, values in rows.by_model_bucket(self.bucket_s):
            self._pending[key] = self._pending[key] + values if key in self._pending else values
        for model in np.unique(rows.model.astype(str)).tolist():
            self._recent.setdefault(model, deque(maxlen=RECENT_BUCKETS)).append(rows.take(rows.model == model))

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        """Feed every pending bucket before ``end_bucket`` to its model's detector, in time order."""
        alerts = []
        for model, bucket in sorted((k for k in self._pending if k[1] < end_bucket), key=lambda k: k[1]):
            values = self._pending.pop((model, bucket))
            carried, buckets = self._carry.pop(model, (np.zeros_like(values), 0))
            values, buckets = carried + values, buckets + 1
            point, weight = series_values(self.rule.series, values, self.bucket_s * buckets)
            if weight[0] < self.rule.min_events or not np.isfinite(point[0]):
                self._carry[model] = (values, buckets)  # too few events yet: pooled into the next point
                continue
            alert = self._update(model, bucket, float(point[0]))
            if alert:
                alerts.append(alert)
        now = float(end_bucket * self.bucket_s)
        for model, alert in list(self._open.items()):
            if now - self._last_drift[model] >= self.rule.resolve_after:
                del self._open[model]
                alerts.append(alert.resolve(at=now, summary=f"resolved: {alert.summary}"))
        return alerts

    def _update(self, model: str, bucket: int, value: float) -> Alert | None:
        detector = self._detectors.get(model)
        if detector is None:
            detector = self._detectors[model] = self._new_detector()
        detector.update(value)
        self._points[model] += 1
        levels = self._levels.setdefault(model, deque(maxlen=4 * RECENT_BUCKETS))
        self.statistics[model] = stats = self._statistic(detector, value)
        if stats.get("statistic", 1.0) <= 1e-12:
            self._onset[model] = bucket + 1
        if not detector.drift_detected or self._points[model] <= self.rule.grace_points:
            levels.append(value)
            return None
        now = float((bucket + 1) * self.bucket_s)
        self._last_drift[model] = now
        if model in self._open:
            return None
        if self.rule.detector == "adwin":
            change_at = now - (getattr(detector, "width", 1) or 1) * self.bucket_s
        elif self.rule.detector == "kswin":
            change_at = now - self.rule.stat_size * self.bucket_s  # the recent sample that differs
        else:
            change_at = float(self._onset.get(model, bucket) * self.bucket_s)
        before = float(np.median(levels)) if levels else float("nan")
        shared, clients = self._shared(model, before, value)
        alert = Alert.firing(
            rule=f"{self.rule.name}/{self.rule.severity}", slo=self.rule.name, severity=self.rule.severity,
            model=model, client_id=None, sli=self.rule.series, objective=None, burn_rates={}, windows=[],
            first_event_ts=change_at, fired_at=now,
            evidence={"series": self.rule.series, "before": round(before, 4), "now": round(value, 4),
                      "clients_moved": shared, "clients": clients},
            summary=f"{self.rule.headline(model)}: model {model}, {self.rule.series} now {value:.3f} "
                    f"(was {before:.3f}; {self.rule.detector} detected a change)" + _moved(shared, clients),
            runbook_url=self.rule.runbook, rule_labels=self.rule.labels,
        )
        self._open[model] = alert
        return alert

    def _shared(self, model: str, before: float, now: float) -> tuple[int, int]:
        """How many of the clients active in the last buckets moved from ``before`` towards ``now`` by at least
        half the population's change (clients with at least ``min_events`` events)."""
        recent = list(self._recent.get(model, ()))
        if not recent or not np.isfinite(before):
            return 0, 0
        rows = SliRows.concat(recent)
        rows = rows.take(rows.client != "")  # per-model sums (older history; a sharded alerter's model stage)
        clients, inverse = np.unique(rows.client.astype(str), return_inverse=True)
        sums = np.zeros((len(clients), rows.values.shape[1]))
        np.add.at(sums, inverse, rows.values)
        value, weight = series_values(self.rule.series, sums, self.bucket_s * len(recent))
        counted = (weight >= self.rule.min_events) & np.isfinite(value)
        moved = counted & ((value - before) * np.sign(now - before) >= 0.5 * abs(now - before))
        return int(moved.sum()), int(counted.sum())

    def _statistic(self, detector, value: float) -> dict[str, float]:
        """The detector's state beside its boolean, for the debug dashboard."""
        if self.rule.detector == "adwin":
            return {"value": value, "estimation": float(detector.estimation), "width": float(detector.width)}
        if self.rule.detector == "kswin":
            p_value = getattr(detector, "p_value", None)
            return {"value": value, "p_value": 1.0 if p_value is None else float(p_value), "alpha": self.rule.alpha}
        increase = detector._sum_increase - detector._min_increase  # river keeps the Page-Hinkley sums private
        decrease = detector._max_decrease - detector._sum_decrease
        return {"value": value, "mean": float(detector._x_mean.get()), "statistic": float(max(increase, decrease)),
                "threshold": self.rule.threshold}


def _moved(shared: int, clients: int) -> str:
    """The summary's account of the clients (none where only per-model sums reach this alerter)."""
    if not clients:
        return "; no per-client figures here (a sharded alerter's model stage, or only older history)"
    verdict = (": a shift of the population" if shared >= clients / 2
               else ": look at those clients (an attack can hide in drift)")
    return f"; {shared} of {clients} active clients moved the same way{verdict}"
