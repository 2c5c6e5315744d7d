"""The alert evaluator: merges SLI rows from any number of ingest batches and evaluates the rules
at every closed bucket boundary of event time.

On a sharded alerter (:mod:`monitor.contracts.shards`) each partition's alerter runs a ``role``'s rules: the
model stage (``"models"``) the model-wide ones on per-model sums (``ingest_totals``) and the Sybil group rule on
per-client rows; a client shard (``"clients"``) the per-client ones, its clients judged against the whole
population's sums.

>>> from monitor.spec.rules import load_rules_text
>>> alerter = Alerter(load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99}]"), bucket_s=60)
>>> alerter.advance(watermark=1000.0)
[]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from monitor.alerting.drift import DriftEvaluator
from monitor.alerting.evaluator import Evaluator
from monitor.alerting.groups import GroupEvaluator
from monitor.alerting.nodata import NoDataEvaluator
from monitor.alerting.samples import EvidenceSamples
from monitor.alerting.slo import SloEvaluator
from monitor.alerting.standout import ClientStandoutEvaluator
from monitor.contracts.alerts import Alert
from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import SliRows
from monitor.spec.rules import Rules


class Alerter:
    """SLO burn-rate evaluators and drift detectors behind one event-time clock (the watermark)."""

    def __init__(self, rules: Rules, bucket_s: int = 60, grace_s: float = 60.0,
                 baselines: Mapping[str, Mapping[str, float]] | None = None, role: str = "all") -> None:
        """``baselines``: per model, the benign SLI rates the profile measured (objectives relative to them);
        ``role``: ``"all"``, or a sharded alerter's ``"models"`` or ``"clients"``."""
        self.rules = rules
        self.bucket_s = bucket_s
        self.grace_s = grace_s
        self.role = role
        models, clients = role != "clients", role != "models"
        self.slos = [SloEvaluator(slo, bucket_s, baselines) for slo in rules.slos
                     if (models if slo.scope == "model" else clients)]
        self.drifts = [DriftEvaluator(rule, bucket_s) for rule in rules.drift if models]
        self.no_data = [NoDataEvaluator(rule, bucket_s) for rule in rules.no_data if models]
        self.clients = [ClientStandoutEvaluator(rule, bucket_s, population_from_totals=role == "clients")
                        for rule in rules.clients if clients]
        self.groups = [GroupEvaluator(rule, bucket_s) for rule in rules.groups if models]
        self.evaluators: list[Evaluator] = [*self.slos, *self.drifts, *self.no_data, *self.clients, *self.groups]
        self.samples = EvidenceSamples()
        self.evaluated_until: int | None = None  # buckets before this one have been evaluated
        self.late_rows = 0
        self._open_totals: dict[tuple[str, int], np.ndarray] = {}  # (model, bucket) -> summed values
        self._closed_totals: list[tuple[str, np.ndarray]] = []
        self._open_rows: list[SliRows] = []  # rows of buckets still open, for per-client figures at close
        self._open_oldest: int | None = None  # the oldest bucket number among them
        self._closed_rows: list[SliRows] = []

    def ingest(self, rows: SliRows, flagged: FlaggedEvents | None = None, edges: MatchEdges | None = None) -> None:
        if flagged is not None and len(flagged):
            self.samples.add(flagged)
        if edges is not None and len(edges):
            for group in self.groups:
                group.ingest_edges(edges)
        if not len(rows):
            return
        if self.evaluated_until is None:  # nothing before the first bucket with data needs evaluating
            self.evaluated_until = int(rows.bucket.min() // self.bucket_s)
        late = rows.bucket // self.bucket_s < self.evaluated_until
        self.late_rows += int(late.sum())
        if self.role != "models":  # the model stage's rows carry a few counters only; its sums come as totals
            if self.role == "all":
                self._add_totals(rows)
            self._keep_open(rows.take(~late) if late.any() else rows)
        for evaluator in self.evaluators:
            if self.role == "all" or not evaluator.reads_totals:
                evaluator.ingest(rows)

    def ingest_totals(self, rows: SliRows) -> None:
        """Rows summed over each model's clients (client ``""``): of history older than ``client_history_s``
        (unsharded), or every batch's (sharded). The evaluators that read only such sums take them; on a client
        shard, they are the population the clients are judged against."""
        if not len(rows):
            return
        if self.evaluated_until is None:
            self.evaluated_until = int(rows.bucket.min() // self.bucket_s)
        if self.role == "models":
            self._add_totals(rows)
        for evaluator in self.evaluators:
            if evaluator.reads_totals:
                evaluator.ingest(rows)
        for standout in self.clients:
            standout.ingest_population(rows)

    @property
    def client_history_s(self) -> float:
        """Seconds of per-client rows the evaluators need to be rebuilt (older history: per-model sums)."""
        return max([e.client_history_s for e in self.evaluators], default=0.0)

    def advance(self, watermark: float) -> list[Alert]:
        """Evaluate every bucket that closed (ended at least ``grace_s`` before the watermark)."""
        if not math.isfinite(watermark):
            return []
        return self.evaluate_until(int((watermark - self.grace_s) // self.bucket_s))

    def evaluate_until(self, end_bucket: int) -> list[Alert]:
        start = end_bucket if self.evaluated_until is None else self.evaluated_until + 1
        alerts: list[Alert] = []
        for bucket in range(max(start, end_bucket - 4 * 24 * 3600 // self.bucket_s), end_bucket + 1):
            for evaluator in self.evaluators:
                alerts.extend(evaluator.evaluate(bucket, self.samples))
        self.evaluated_until = max(end_bucket, self.evaluated_until or end_bucket)
        for key in [k for k in self._open_totals if k[1] < self.evaluated_until]:
            self._closed_totals.append((key[0], self._open_totals.pop(key)))
        self._close_rows()
        return alerts

    def _keep_open(self, rows: SliRows) -> None:
        if len(rows):
            self._open_rows.append(rows)
            oldest = int(rows.bucket.min()) // self.bucket_s
            self._open_oldest = oldest if self._open_oldest is None else min(self._open_oldest, oldest)

    def _close_rows(self) -> None:
        """Move the rows of buckets that just closed aside: once per bucket boundary, not per batch."""
        if self._open_oldest is None or self.evaluated_until is None or self._open_oldest >= self.evaluated_until:
            return
        rows = SliRows.concat(self._open_rows).combined()
        closed = rows.bucket // self.bucket_s < self.evaluated_until
        self._closed_rows.append(rows.take(closed))
        self._open_rows, self._open_oldest = [], None
        self._keep_open(rows.take(~closed))

    def _add_totals(self, rows: SliRows) -> None:
        for (model, bucket), values in rows.by_model_bucket(self.bucket_s):
            if self.evaluated_until is not None and bucket < self.evaluated_until:
                self._closed_totals.append((model, values))  # late: straight to the closed totals
            elif (model, bucket) in self._open_totals:
                self._open_totals[(model, bucket)] = self._open_totals[(model, bucket)] + values
            else:
                self._open_totals[(model, bucket)] = values

    def take_closed_totals(self) -> list[tuple[str, np.ndarray]]:
        """Per-model counter sums of the buckets closed since the last call (values as ``SliRows.values``):
        what the ``advmon_sli_*_total`` counters export, once every source has reported a bucket."""
        closed, self._closed_totals = self._closed_totals, []
        return closed

    def take_closed_rows(self) -> SliRows:
        """The (bucket, model, client) rows of the buckets closed since the last call, merged: the
        per-client query entropy and rate exported at close. Late rows of closed buckets are left out."""
        closed, self._closed_rows = self._closed_rows, []
        return SliRows.concat(closed).combined()

    @property
    def firing(self) -> list[Alert]:
        return [a for e in self.evaluators for a in e.firing]
