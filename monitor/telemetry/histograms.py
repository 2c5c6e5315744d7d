"""A Prometheus histogram fed a whole batch at once (numpy), for distributions on the hot path.

prometheus-client's ``Histogram.observe`` takes one value per call; this collector bins a batch
with ``searchsorted`` + ``bincount`` and exposes the same ``_bucket``/``_sum``/``_count`` series.

>>> import numpy as np
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> r = CollectorRegistry()
>>> h = BatchHistogram("demo_confidence", "Confidence", ["model"], buckets=(0.5, 0.9), registry=r)
>>> h.observe_many(("m",), np.array([0.2, 0.6, 0.95, 0.97]))
>>> for line in generate_latest(r).decode().splitlines():
...     if line.startswith("demo_confidence_bucket"): print(line)
demo_confidence_bucket{le="0.5",model="m"} 1.0
demo_confidence_bucket{le="0.9",model="m"} 2.0
demo_confidence_bucket{le="+Inf",model="m"} 4.0
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily


class BatchHistogram:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = np.asarray(sorted(buckets), np.float64)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            return
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1)
        with self._lock:
            previous, total = self._series.get(labels, (np.zeros(len(self.bounds) + 1, np.int64), 0.0))
            self._series[labels] = (previous + counts, total + float(values.sum()))

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = dict(self._series)
        for labels, (counts, total) in series.items():
            cumulative = np.cumsum(counts)
            buckets = [(repr(float(b)) if b != int(b) else f"{b:.1f}", float(c))
                       for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        yield family
