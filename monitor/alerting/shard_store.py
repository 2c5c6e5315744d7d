"""One partition's part of a sharded alerter's key-value store (a faust table holds every partition the worker owns).

Partition 0 (and an unsharded alerter) keeps its keys as they are, so its store reads as before sharding; a
client shard's keys carry the prefix ``§<partition>␞``, which no key of :mod:`monitor.alerting.state` starts with.

>>> table = {}
>>> zero, two = PartitionStore(table, 0), PartitionStore(table, 2)
>>> zero["progress"], two["progress"] = 1, 2
>>> sorted(table), dict(zero.items()), dict(two.items()), "progress" in two, len(two)
(['progress', '§2\\x1eprogress'], {'progress': 1}, {'progress': 2}, True, 1)
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

_MARK = "§"


class PartitionStore(MutableMapping[str, Any]):
    """The keys of one partition in a store shared by several, without their prefix."""

    def __init__(self, store: MutableMapping[str, Any], partition: int) -> None:
        self.store = store
        self.prefix = "" if partition == 0 else f"{_MARK}{partition}\x1e"

    def _mine(self, key: str) -> bool:
        return key.startswith(self.prefix) if self.prefix else not key.startswith(_MARK)

    def __getitem__(self, key: str) -> Any:
        return self.store[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.store[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.store[self.prefix + key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.prefix + key in self.store

    def get(self, key: str, default: Any = None) -> Any:
        return self.store.get(self.prefix + key, default)

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        return (key[n:] for key in list(self.store) if self._mine(key))

    def __len__(self) -> int:
        return sum(1 for key in self.store if self._mine(key))
