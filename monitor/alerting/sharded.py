"""A sharded alerter in one process: every partition's :class:`~monitor.alerting.durable.DurableAlerter` (its
role, its part of the store), fed the parts of each message as the producers split them
(:func:`monitor.contracts.shards.split`). The daemons run the same objects, one per owned partition, on several
workers; this is what benchmarks and tests compare with an unsharded alerter.

>>> from monitor.spec.rules import load_rules_text
>>> sharded = ShardedAlerter(load_rules_text("slos: [{name: a, sli: input_anomaly_rate, objective: 0.99}]"), 3)
>>> [(alerter.role, [e.slo.name for e in alerter.alerter.slos]) for alerter in sharded.partitions]
[('models', ['a']), ('clients', []), ('clients', [])]
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from monitor.alerting.durable import DurableAlerter
from monitor.alerting.shard_store import PartitionStore
from monitor.contracts.alerts import Alert
from monitor.contracts.shards import role_of, split
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import Rules


class ShardedAlerter:
    """``partitions`` partitions' alerters over one store (a dict by default)."""

    def __init__(self, rules: Rules, partitions: int, store: MutableMapping[str, Any] | None = None,
                 **options: Any) -> None:
        self.store = {} if store is None else store
        self.partitions = [DurableAlerter(rules, PartitionStore(self.store, p), role=role_of(p, partitions), **options)
                           for p in range(partitions)]

    def apply(self, offset: int, batch: SliBatch, now: float, topic: str = "sli-buckets") -> list[Alert]:
        """Apply each partition's part of a message (at ``offset`` of every partition); the alerts all released."""
        parts = split(batch, len(self.partitions))
        return [a for alerter, part in zip(self.partitions, parts, strict=True)
                for a in alerter.apply(offset, part, now, topic)]

    @property
    def firing(self) -> list[Alert]:
        return [a for alerter in self.partitions for a in alerter.firing]
