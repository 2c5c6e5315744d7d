"""Bounded samples of flagged events per model and client, so alerts can name example events and fingerprints.

>>> from monitor.contracts.flagged import FlaggedEvents
>>> store = EvidenceSamples(per_key=2)
>>> store.add(FlaggedEvents.of(["e1", "e2", "e3"], ["m"] * 3, ["c", "c", "d"], [1.0, 2.0, 3.0], ["anomalous"] * 3,
...                            ["f1", "f1", "f2"]))
>>> store.samples("m", "c"), store.samples("m", None)
((['e1', 'e2'], ['f1']), (['e2', 'e3'], ['f1', 'f2']))
"""

from __future__ import annotations

from collections import OrderedDict, deque

from monitor.contracts.flagged import FlaggedEvents


class EvidenceSamples:
    """The latest ``per_key`` suspicious event ids (and their fingerprints) per model and per client."""

    def __init__(self, per_key: int = 5, max_keys: int = 10_000) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._samples: OrderedDict[tuple[str, str | None], deque[tuple[str, str]]] = OrderedDict()

    def add(self, flagged: FlaggedEvents) -> None:
        for event_id, model, client, fingerprint in zip(flagged.event_id, flagged.model, flagged.client_id,
                                                        flagged.fingerprint, strict=True):
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
