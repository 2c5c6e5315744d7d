"""Multiwindow multi-burn-rate evaluation of one SLO over all its keys, and the alert lifecycle.

A tier fires for a key when the error rate over both its long and its short window exceeds
``factor * (1 - objective)`` and the long window holds at least ``min_events`` events. An alert
(one per key and severity) fires on the first evaluation a tier of its severity fires, and
resolves once none has fired for ``resolve_after`` (hysteresis). Time-to-detect runs from the first
offending event of the incident (in the trailing run of buckets burning faster than the tier's
factor) to the evaluation that fired, both in event time.

>>> import numpy as np
>>> from monitor.spec.rules import load_rules_text
>>> from monitor.contracts.sli import SliRows
>>> slo = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99, min_events: 10, "
...                        "severities: [page]}]").slos[0]
>>> ev = SloEvaluator(slo, bucket_s=60)
>>> n = 20; bad = np.arange(n) >= 10
>>> ev.ingest(SliRows.from_columns(bucket=np.zeros(n), model=np.array(["m"] * n, dtype=object),
...     client=np.array(["c"] * n, dtype=object), ts=np.arange(n, dtype=float),
...     flags={"traffic_events": np.ones(n, bool), "anomalous": bad}, confidence=np.ones(n)))
0
>>> [(a.status, a.severity, a.burn_rates, a.time_to_detect_s) for a in ev.evaluate(end_bucket=1)]
[('firing', 'page', {'1h': 50.0, '5m': 50.0}, 50.0)]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from monitor.alerting.burnrate import BurnRateWindows
from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SLI_DEFINITIONS, SliRows
from monitor.spec.rules import Slo, Tier

_SEVERITY_ORDER = ("page", "ticket")


def _burn_rate(bad: np.ndarray, total: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Error rate over the window divided by the error budget (0 where the window is empty)."""
    return np.divide(bad, total, out=np.zeros_like(bad), where=total > 0) / budget


class SloEvaluator:
    def __init__(self, slo: Slo, bucket_s: int, baselines: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.slo = slo
        self.bucket_s = bucket_s
        self.baselines = baselines or {}  # model -> SLI -> benign rate measured when the profile was fitted
        self.bad_counter, self.total_counter = SLI_DEFINITIONS[slo.sli]
        self.windows = BurnRateWindows(horizon_buckets=-(-slo.horizon_s // bucket_s))
        self.severities = [s for s in _SEVERITY_ORDER if s in slo.severities]
        self._open: dict[tuple[int, str], Alert] = {}  # (row, severity) -> firing alert
        self._last_hot: dict[tuple[int, str], float] = {}
        self._floor: dict[int, int] = {}  # row -> first bucket of its current incident window
        self.last_burn: dict[str, np.ndarray] = {}
        self.reads_totals = slo.scope == "model"
        self.client_history_s = 0.0 if self.reads_totals else float(slo.horizon_s)
        self._evaluations = 0

    def ingest(self, rows: SliRows) -> int:
        """Add aggregate rows; returns how many were older than the horizon (counted in ``late_dropped``)."""
        total = rows.column(self.total_counter)
        keep = (total != 0) | (rows.column(self.bad_counter) != 0)  # scorer rows change bad counts only
        if not keep.any():
            return 0
        models, clients = rows.model[keep], rows.client[keep]
        keys = list(zip(models, clients, strict=True)) if self.slo.scope == "client" else [(m, None) for m in models]
        dropped = self.windows.add(
            self.windows.rows(keys), rows.bucket[keep] // self.bucket_s,
            rows.column(self.bad_counter)[keep], total[keep], rows.first_bad(self.bad_counter)[keep],
        )
        return dropped

    @property
    def late_dropped(self) -> int:
        """Entries older than the horizon when they reached the windows."""
        return self.windows.dropped

    @property
    def firing(self) -> list[Alert]:
        return list(self._open.values())

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        """Evaluate at the end of bucket ``end_bucket - 1``; returns alerts that fired or resolved."""
        if not len(self.windows):
            return []
        self.windows.advance(end_bucket - 1)
        now = float(end_bucket * self.bucket_s)
        budget = self._budgets()
        hot = {s: np.zeros(len(self.windows), bool) for s in self.severities}
        burn: dict[str, dict[int, tuple[Tier, float, float, float]]] = {s: {} for s in self.severities}
        for tier in self.slo.tiers:
            long_bad, long_total = self.windows.sums(end_bucket, tier.long_s // self.bucket_s)
            short_bad, short_total = self.windows.sums(end_bucket, tier.short_s // self.bucket_s)
            long_burn, short_burn = _burn_rate(long_bad, long_total, budget), _burn_rate(short_bad, short_total, budget)
            self.last_burn[tier.names[0]] = long_burn
            fires = (long_burn > tier.factor) & (short_burn > tier.factor) & (long_total >= self.slo.min_events)
            for row in np.flatnonzero(fires & ~hot[tier.severity]).tolist():
                burn[tier.severity][row] = (tier, float(long_burn[row]), float(short_burn[row]), float(budget[row]))
            hot[tier.severity] |= fires
        alerts: list[Alert] = []
        for severity in self.severities:
            for row in np.flatnonzero(hot[severity]).tolist():
                self._last_hot[(row, severity)] = now
                if (row, severity) not in self._open:
                    alerts.append(self._fire(row, severity, burn[severity][row], end_bucket, now, samples))
            alerts.extend(self._resolve_cooled(severity, hot[severity], end_bucket, now))
        self._evaluations += 1
        if self._evaluations % 60 == 0:
            self._release_idle()
        return alerts

    def _release_idle(self) -> None:
        """Keys without events in the whole horizon and without an open alert give their row back."""
        busy = {row for row, _ in self._open}
        idle = [int(r) for r in self.windows.idle_rows() if int(r) not in busy]
        if not idle:
            return
        self.windows.release(idle)
        for row in idle:
            self._floor.pop(row, None)
            for severity in self.severities:
                self._last_hot.pop((row, severity), None)

    def _budgets(self) -> np.ndarray:
        """Each key's error budget: 1 - objective, or the rule's multiple of its model's measured baseline."""
        models = [k[0] if k is not None else "" for k in self.windows.keys]
        allowed = {m: self.slo.allowed_rate(self.baselines.get(m, {}).get(self.slo.sli)) for m in set(models)}
        return np.array([allowed[m] for m in models])

    def _fire(self, row: int, severity: str, burn: tuple[Tier, float, float, float], end_bucket: int, now: float,
              samples: EvidenceSamples | None) -> Alert:
        tier, long_burn, short_burn, budget = burn
        model, client = self._key(row)
        budget_rate = tier.factor * budget
        onset = self.windows.onset(row, end_bucket, tier.long_s // self.bucket_s, budget_rate)
        first = self.windows.first_bad(row, max(onset, self._floor.get(row, onset)), end_bucket)
        event_ids, fingerprints = samples.samples(model, client) if samples else ([], [])
        long_name, short_name = tier.names
        who = f"client {client} of model {model}" if client else f"model {model}"
        alert = Alert.firing(
            rule=f"{self.slo.name}/{severity}", slo=self.slo.name, severity=severity, model=model, client_id=client,
            sli=self.slo.sli, objective=self.slo.objective,
            burn_rates={long_name: round(long_burn, 3), short_name: round(short_burn, 3)},
            windows=[long_name, short_name], first_event_ts=first if np.isfinite(first) else None, fired_at=now,
            fingerprints=fingerprints, sample_event_ids=event_ids,
            summary=f"{self.slo.headline(model, client, severity)}: {who}, {self.slo.sli} {long_burn * budget:.2%} "
                    f"over "
                    f"{long_name} and {short_burn * budget:.2%} over {short_name} where {budget:.2%} is allowed"
                    f"{self._allowance(model)} (burning the error budget {long_burn:.1f}x and {short_burn:.1f}x)",
            runbook_url=self.slo.runbook, rule_labels=self.slo.labels,
        )
        self._open[(row, severity)] = alert
        return alert

    def _allowance(self, model: str) -> str:
        baseline = self.baselines.get(model, {}).get(self.slo.sli)
        if self.slo.baseline_multiple is None or not baseline:
            return ""
        return f", {self.slo.baseline_multiple:g}x the {baseline:.2%} the profile measured on benign traffic"

    def _key(self, row: int) -> tuple[str, str | None]:
        """(model, client) of a row; client None for a model-scoped SLO."""
        key = self.windows.keys[row]
        assert key is not None, "a live row has a key"
        return key

    def _resolve_cooled(self, severity: str, hot: np.ndarray, end_bucket: int, now: float) -> list[Alert]:
        resolved = []
        for (row, sev), alert in list(self._open.items()):
            if sev != severity or hot[row] or now - self._last_hot[(row, sev)] < self.slo.resolve_after:
                continue
            del self._open[(row, sev)]
            self._floor[row] = end_bucket
            resolved.append(alert.resolve(at=now, summary=f"resolved: {alert.summary}"))
        return resolved
