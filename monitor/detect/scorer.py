"""The embedding scorer: score requests in, SLI deltas and evidence out (and the request's queries passed on).

Scores with numpy, or with torch on a GPU (``device="cuda"``, see ``monitor.detect.torch_profiles``). A request
that carries its batch's queries for the matcher (remote matching too) gets them back with the events the scorer
flagged marked anomalous, as ingest marks those its own scores flag.

>>> import numpy as np
>>> from monitor.detect.profiles import ModelProfile, Profile
>>> from monitor.contracts.score_requests import PRODUCTION, ScoreGroup, ScoreRequestBatch
>>> rng = np.random.default_rng(0)
>>> profile = Profile({"m/embedding": ModelProfile.fit(rng.normal(size=(500, 4)).astype(np.float32),
...                                                    rng.integers(0, 2, 500).astype(str), fpr=0.01)})
>>> far = np.full((3, 4), 9.0, np.float32)
>>> group = ScoreGroup("m", np.array(["a", "b", "c"], dtype=object), np.array(["k"] * 3, dtype=object),
...     np.array([60.0, 61.0, 62.0]), np.ones(3), np.zeros(3, np.int8), np.array([False, False, True]),
...     np.array([False, False, True]), far, None)
>>> result = EmbeddingScorer(profile).score(ScoreRequestBatch("ingest-0", 62.0, [group]))
>>> result.scored, result.rows.column("anomalous").tolist(), result.flagged.event_id.tolist()
(3, [2.0], ['a', 'b'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.score_requests import PRODUCTION, ScoreGroup, ScoreRequestBatch, score_deltas
from monitor.contracts.sli import SliRows
from monitor.detect.lsh import embedding_fingerprints
from monitor.detect.profiles import ModelProfile, Profile, Scores

if TYPE_CHECKING:
    from monitor.detect.torch_profiles import TorchProfile


@dataclass(frozen=True)
class ScorerResult:
    rows: SliRows  # counter deltas
    flagged: FlaggedEvents  # newly flagged production events
    scored: int
    unprofiled: int  # embeddings of models (or dimensions) the profile does not describe
    matches: MatchRequestBatch | None = None  # the request's queries for the matcher, flagged events anomalous


class EmbeddingScorer:
    def __init__(self, profile: Profile, bucket_s: int = 60, device: str | None = None) -> None:
        self.profile = profile
        self.bucket_s = bucket_s
        self.device = device  # a torch device ("cuda", "cpu"), or None for numpy
        self._on_device: dict[int, TorchProfile] = {}

    @property
    def backend(self) -> str:
        return "numpy" if self.device is None else f"torch/{self.device}"

    def _scores(self, model: ModelProfile, embedding: np.ndarray, logits: np.ndarray | None) -> Scores:
        if self.device is None:
            return model.score(embedding, logits)
        scorer = self._on_device.get(id(model))
        if scorer is None:
            from monitor.detect.torch_profiles import TorchProfile  # torch is imported only for a torch backend

            scorer = self._on_device[id(model)] = TorchProfile(model, self.device)
        return scorer.score(embedding, logits)

    def _named(self, group: ScoreGroup, flagged: np.ndarray, found: FlaggedEvents) -> FlaggedEvents:
        """The newly flagged production events' fingerprints: LSH signatures of their embeddings (as
        ingest names embedding-only events), so near-identical suspicious inputs share a key."""
        rows = np.flatnonzero(flagged & ~group.anomalous & (group.kind == PRODUCTION))
        names = embedding_fingerprints(group.embedding[rows]) if len(rows) else []
        return replace(found, fingerprint=np.asarray(names, object))

    def score(self, request: ScoreRequestBatch) -> ScorerResult:
        tables: list[SliRows] = []
        found: list[FlaggedEvents] = []
        flagged_ids: list[np.ndarray] = []
        scored = unprofiled = 0
        for group in request.groups:
            model = self.profile.get(group.model, "embedding")
            if model is None or model.dim != group.embedding.shape[1]:
                unprofiled += len(group)
                continue
            logits = group.logits if model.thresholds[2] < np.inf else None
            if logits is not None and logits.shape[1] != model.means.shape[0]:
                logits = None
            flagged = self._scores(model, group.embedding, logits).flagged
            flagged_ids.append(group.event_id[flagged])
            rows, newly = score_deltas(group, flagged, self.bucket_s)
            tables.append(rows)
            found.append(self._named(group, flagged, newly))
            scored += len(group)
        return ScorerResult(SliRows.concat(tables).combined(), FlaggedEvents.concat(found), scored, unprofiled,
                            _marked(request.matches, flagged_ids))


def _marked(matches: MatchRequestBatch | None, flagged_ids: list[np.ndarray]) -> MatchRequestBatch | None:
    """The queries with the events the scorer flagged marked anomalous (the matcher leaves their clean,
    missed and false-positive counts to the scorer)."""
    if matches is None:
        return None
    ids = np.concatenate([np.empty(0, object), *flagged_ids]).astype(str)
    groups = [replace(g, anomalous=g.anomalous | np.isin(g.event_id.astype(str), ids)) for g in matches.groups]
    return replace(matches, groups=groups)
