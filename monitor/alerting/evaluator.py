"""What every rule evaluator does for the alerter: take SLI rows, evaluate closed buckets, say what fires.

>>> from monitor.alerting.nodata import NoDataEvaluator
>>> from monitor.spec.rules import NoDataRule
>>> isinstance(NoDataEvaluator(NoDataRule(name="quiet"), bucket_s=60), Evaluator)
True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SliRows


@runtime_checkable
class Evaluator(Protocol):
    """An SLO, drift or no-data rule over every key it watches."""

    @property
    def firing(self) -> list[Alert]:
        """The alerts open now."""
        ...

    @property
    def client_history_s(self) -> float:
        """Seconds of per-client rows a rebuilt evaluator needs to reach the state it had (0: none)."""
        ...

    @property
    def reads_totals(self) -> bool:
        """Whether rows summed over a model's clients (client ``""``) are all it reads; history older than
        ``client_history_s`` is kept only as such sums."""
        ...

    def ingest(self, rows: SliRows) -> object:
        """Add aggregate rows (any bucket, any order)."""
        ...

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        """Evaluate at the end of bucket ``end_bucket - 1``; returns the alerts that fired or resolved."""
        ...
