"""Bounded samples of suspicious inputs, so alerts can name example events and fingerprints.

>>> import numpy as np
>>> store = Evidence(per_key=2)
>>> store.add(np.array(["e1", "e2", "e3"], dtype=object), np.array(["m"] * 3, dtype=object),
...           np.array(["c", "c", "d"], dtype=object), np.array(["f1", "f1", "f2"], dtype=object))
>>> store.samples("m", "c"), store.samples("m", None)
((['e1', 'e2'], ['f1']), (['e2', 'e3'], ['f1', 'f2']))
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np


class Evidence:
    """The latest ``per_key`` suspicious event ids (and their fingerprints) per model and per client."""

    def __init__(self, per_key: int = 5, max_keys: int = 10_000) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._samples: OrderedDict[tuple[str, str | None], deque[tuple[str, str]]] = OrderedDict()

    def add(self, event_ids: np.ndarray, models: np.ndarray, clients: np.ndarray, fingerprints: np.ndarray) -> None:
        for event_id, model, client, fingerprint in zip(event_ids, models, clients, fingerprints):
            for key in ((model, client), (model, None)):
                bucket = self._samples.get(key)
                if bucket is None:
                    bucket = self._samples[key] = deque(maxlen=self.per_key)
                    if len(self._samples) > self.max_keys:
                        self._samples.popitem(last=False)
                else:
                    self._samples.move_to_end(key)
                bucket.append((event_id, fingerprint))

    def samples(self, model: str, client: str | None) -> tuple[list[str], list[str]]:
        """(event ids, distinct fingerprints) of the key's latest suspicious inputs."""
        items = self._samples.get((model, client), ())
        fingerprints = list(dict.fromkeys(f for _, f in items if f))
        return [e for e, _ in items], fingerprints
