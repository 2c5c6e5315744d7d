"""The per-batch detection engine: one validated batch in, SLI rows and suspicious inputs out.

Pure and vectorized: the same object runs inside ``advmon demo``/``replay`` and inside the Kafka
ingest workers. It keeps only bounded state (fingerprint indexes, the watermark).

>>> import numpy as np
>>> from monitor.detect.parsing import parse_batch
>>> engine = Engine(EngineSettings(fingerprint_secret=b"doc"))
>>> rng = np.random.default_rng(0); base = rng.random(64)
>>> records = [('{"event_id":"%d","ts":%d,"client_id":"c","model":"m","prediction":{"label":"1","confidence":0.9},'
...             '"input":{"features":%s}}' % (i, i, np.clip(base + rng.normal(0, .002, 64), 0, 1).tolist())).encode()
...            for i in range(40)]
>>> out = engine.process(parse_batch(records).batch)
>>> int(out.rows.column("events").sum()), int(out.rows.column("query_flagged").sum()) > 30, out.watermark
(40, True, 39.0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields

import numpy as np

from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import SCORE_COLUMNS, FlaggedEvents
from monitor.contracts.score_requests import ADVERSARIAL_CANARY, BENIGN_CANARY, PRODUCTION, ScoreGroup
from monitor.contracts.sli import ENTROPY_BINS, RANK_BINS, SCORE_EDGES, SliRows
from monitor.detect.batch import EventBatch, Groups
from monitor.detect.fingerprint import ClientCodes, Fingerprinter, QueryIndex, content_hashes
from monitor.detect.lsh import embedding_fingerprints, planes_for
from monitor.detect.margin_ranks import MarginRanks
from monitor.detect.profiles import Profile
from monitor.detect.text_fingerprint import TextFingerprinter, text_content_hashes


@dataclass(frozen=True)
class EngineSettings:
    fingerprint_secret: bytes
    bucket_s: int = 60
    grace_s: float = 60.0
    fingerprint_generation_queries: int = 50_000
    fingerprint_generation_s: float = 24 * 3600.0
    fingerprint_postings_cap: int = 64
    remote_embedding_scoring: bool = False  # embeddings go to the scorer worker instead of being scored here


@dataclass(frozen=True)
class EventFlags:
    """Per-event booleans of a batch, one array per counter of ``monitor.contracts.sli.COUNTERS``."""

    events: np.ndarray
    traffic_events: np.ndarray  # production traffic (canaries are measured, not alerted on)
    anomalous: np.ndarray
    queries: np.ndarray  # fingerprinted, not an exact repeat
    duplicates: np.ndarray
    query_flagged: np.ndarray
    labelled: np.ndarray
    errors: np.ndarray
    adv_canary: np.ndarray
    adv_fooled: np.ndarray
    adv_missed: np.ndarray
    benign_canary: np.ndarray
    benign_flagged: np.ndarray
    clean_events: np.ndarray
    own_near_dup: np.ndarray
    cross_near_dup: np.ndarray
    private_near_dup: np.ndarray

    def counters(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class QueryMarks:
    """What the fingerprint index said about each event of a batch (False/0 where no raw input)."""

    fresh: np.ndarray  # fingerprinted and not an exact repeat
    duplicate: np.ndarray  # byte-identical to an earlier query
    flagged: np.ndarray  # near-duplicate of an earlier query
    own: np.ndarray  # near-duplicate of an earlier query of the same client
    cross: np.ndarray  # near-duplicate of an earlier query of another client
    matched_client: np.ndarray  # object: that other client ("" where none)
    exact_hash: np.ndarray  # uint64 content hash; 0 where none was fingerprinted
    input_bin: np.ndarray  # coarse input fingerprint for query entropy; -1: no input

    @classmethod
    def none(cls, n: int) -> QueryMarks:
        return cls(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                   np.full(n, "", dtype=object), np.zeros(n, np.uint64), np.full(n, -1, np.int64))


@dataclass(frozen=True)
class EventSignals:
    """Every detector's reading of every event of a batch, in batch order (NaN where one does not apply)."""

    event_id: np.ndarray
    model: np.ndarray
    client_id: np.ndarray
    ts: np.ndarray
    confidence: np.ndarray
    score_ratio: np.ndarray  # largest profile score on the threshold's scale (0: reference median, above 1: anomalous)
    anomalous: np.ndarray  # bool
    near_duplicate: np.ndarray  # bool: a near-duplicate of an earlier query
    duplicate: np.ndarray  # bool: an exact repeat
    margin: np.ndarray  # top-1 minus top-2 probability; NaN where the model logged neither logits nor probabilities
    own_near_duplicate: np.ndarray  # bool: a near-duplicate of the client's own earlier query
    cross_near_duplicate: np.ndarray  # bool: a near-duplicate of another client's earlier query
    matched_client: np.ndarray  # object: that other client ("")
    margin_rank: np.ndarray  # the margin's rank among the live population's of its class and score band (NaN)

    def __len__(self) -> int:
        return len(self.event_id)


@dataclass(frozen=True)
class ProfileReadings:
    """Per event of a batch: flagged by a profile score, and every score (``SCORE_COLUMNS``: features and
    embedding x Mahalanobis, kNN, energy), raw and on the threshold's scale; NaN where not scored."""

    anomalous: np.ndarray
    scores: np.ndarray
    ratios: np.ndarray

    @classmethod
    def none(cls, n: int) -> ProfileReadings:
        return cls(np.zeros(n, bool), np.full((n, len(SCORE_COLUMNS)), np.nan),
                   np.full((n, len(SCORE_COLUMNS)), np.nan))

    @property
    def score_ratio(self) -> np.ndarray:
        """The largest score on the threshold's scale (above 1: flagged); NaN where unscored."""
        return _nanmax(self.ratios)

    @property
    def statistic(self) -> np.ndarray:
        """The score the per-client statistics use: the raw input's where profiled, else the embedding's (so
        that ingest with a remote scorer computes the same statistics as without one)."""
        features, embedding = _nanmax(self.ratios[:, :3]), _nanmax(self.ratios[:, 3:])
        return np.where(np.isfinite(features), features, embedding)


def _nanmax(matrix: np.ndarray) -> np.ndarray:
    finite = np.isfinite(matrix)
    return np.where(finite.any(axis=1), np.max(np.where(finite, matrix, -np.inf), axis=1, initial=-np.inf), np.nan)


@dataclass(frozen=True)
class BatchResult:
    rows: SliRows
    flagged: FlaggedEvents
    watermark: float
    late_events: int
    signals: EventSignals
    score_groups: list[ScoreGroup] = field(default_factory=list)  # for the scorer, with remote scoring
    edges: MatchEdges = field(default_factory=MatchEdges.empty)  # which clients' queries matched whose

    @property
    def score_ratio(self) -> np.ndarray:
        """Each event's largest profile score over its threshold; NaN: unscored."""
        return self.signals.score_ratio


class Engine:
    """Detectors over a batch: fingerprints of raw inputs, profile scores of inputs and embeddings."""

    def __init__(self, settings: EngineSettings, profile: Profile | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self._fingerprinters: dict[int, Fingerprinter] = {}
        self._indexes: dict[int | str, QueryIndex] = {}  # by input length, or "text"
        self._text = TextFingerprinter(settings.fingerprint_secret)
        self._clients = ClientCodes()
        self.margins = MarginRanks()
        self.watermark = -np.inf

    @property
    def fingerprint_memory_bytes(self) -> int:
        return sum(index.memory_bytes for index in self._indexes.values())

    def process(self, batch: EventBatch) -> BatchResult:
        n = len(batch)
        late = int((batch.ts < self.watermark - self.settings.grace_s).sum())
        if n:
            self.watermark = max(self.watermark, float(batch.ts.max()))
        features = batch.feature_groups()
        marks = self._fingerprint(batch, features)
        _embedding_bins(batch, marks.input_bin)
        remote = self.settings.remote_embedding_scoring
        readings = self._score(batch, features)
        anomalous, score_ratio, statistic = readings.anomalous, readings.score_ratio, readings.statistic
        score_groups = self._score_groups(batch, anomalous, marks.flagged) if remote else []
        flags = _outcomes(batch, anomalous, marks)
        production = flags.traffic_events
        margin_rank = self._margin_ranks(batch, statistic, production)
        buckets = (batch.ts // self.settings.bucket_s).astype(np.int64) * self.settings.bucket_s
        rows = SliRows.from_columns(
            bucket=buckets,
            model=batch.model, client=batch.client_id, ts=batch.ts, flags=flags.counters(),
            confidence=batch.confidence, margin=batch.margin,
            bins={"label": np.where(production, label_bins(batch.label), -1),
                  "input": np.where(production, marks.input_bin, -1),
                  "margin_rank": np.where(production & np.isfinite(margin_rank), rank_bins(margin_rank), -1),
                  "score": np.where(production & np.isfinite(statistic), score_bins(statistic), -1)},
        )
        signals = EventSignals(batch.event_id, batch.model, batch.client_id, batch.ts, batch.confidence, score_ratio,
                               anomalous, marks.flagged, marks.duplicate, batch.margin, marks.own, marks.cross,
                               marks.matched_client, margin_rank)
        edges = MatchEdges.from_events(buckets, batch.model, batch.client_id,
                                       np.where(production, marks.matched_client, ""))
        return BatchResult(rows, self._flagged(batch, flags, marks, readings, margin_rank), self.watermark, late,
                           signals, score_groups, edges)

    def _margin_ranks(self, batch: EventBatch, score_ratio: np.ndarray, production: np.ndarray) -> np.ndarray:
        """Rank each margin against the population's so far, then let production traffic teach the population."""
        ranks = np.full(len(batch), np.nan)
        margin = batch.margin
        for model in np.unique(batch.model[np.isfinite(margin)]).tolist():
            mine = np.flatnonzero(batch.model == model)
            ranks[mine] = self.margins.rank(model, batch.label[mine], score_ratio[mine], margin[mine])
            learn = mine[production[mine]]
            self.margins.update(model, batch.label[learn], score_ratio[learn], margin[learn], batch.ts[learn])
        return ranks

    def _fingerprint(self, batch: EventBatch, features: Groups) -> QueryMarks:
        """Raw numeric inputs (Blacklight) and texts (MinHash) against one query index per input kind."""
        marks = QueryMarks.none(len(batch))
        for dim, (rows, matrix) in features.items():
            fingerprinter = self._numeric_fingerprinter(dim)
            if fingerprinter is not None:
                self._match(batch, marks, rows, dim, fingerprinter.threshold, fingerprinter.hashes(matrix),
                            content_hashes(matrix, self.settings.fingerprint_secret))
                marks.input_bin[rows] = fingerprinter.coarse_bins(matrix, ENTROPY_BINS)
        rows, texts = batch.texts
        if len(rows):
            hashes = self._text.hashes(texts)
            self._match(batch, marks, rows, "text", self._text.threshold, hashes, text_content_hashes(texts))
            marks.input_bin[rows] = (hashes[:, 0] % np.uint64(ENTROPY_BINS)).astype(np.int64)  # the largest: a MinHash
        return marks

    def _numeric_fingerprinter(self, dim: int) -> Fingerprinter | None:
        if dim not in self._fingerprinters:
            try:
                self._fingerprinters[dim] = Fingerprinter.for_dimension(dim, self.settings.fingerprint_secret)
            except ValueError:
                return None  # too short to fingerprint (fewer values than a window)
        return self._fingerprinters[dim]

    def _match(self, batch: EventBatch, marks: QueryMarks, rows: np.ndarray, kind: int | str, threshold: int,
               hashes: np.ndarray, exact: np.ndarray) -> None:
        index = self._indexes.get(kind)
        if index is None:
            s = self.settings
            index = self._indexes[kind] = QueryIndex(threshold, s.fingerprint_postings_cap,
                                                     s.fingerprint_generation_queries, s.fingerprint_generation_s)
        matches = index.update(hashes, exact, now=float(batch.ts[rows].max()),
                               clients=self._clients.codes(batch.client_id[rows]))
        marks.fresh[rows] = ~matches.duplicate
        marks.duplicate[rows] = matches.duplicate
        marks.flagged[rows] = matches.flagged
        marks.own[rows] = matches.own_flagged
        marks.cross[rows] = matches.cross_flagged
        matched = np.full(len(rows), "", dtype=object)
        matched[matches.cross_flagged] = self._clients.names(matches.matched_client[matches.cross_flagged])
        marks.matched_client[rows] = matched
        marks.exact_hash[rows] = matches.exact_hash

    def _score(self, batch: EventBatch, features: Groups) -> ProfileReadings:
        """Every profile score of every event (raw inputs, and embeddings unless a remote scorer takes them)."""
        readings = ProfileReadings.none(len(batch))
        if self.profile is None:
            return readings
        spaces = [("features", features)]
        if not self.settings.remote_embedding_scoring:
            spaces.append(("embedding", batch.embedding_groups()))
        for space, groups in spaces:
            columns = slice(0, 3) if space == "features" else slice(3, 6)
            for dim, (rows, matrix) in groups.items():
                for model in np.unique(batch.model[rows]):
                    profile = self.profile.get(model, space)
                    if profile is None or profile.dim != dim:
                        continue
                    of_model = batch.model[rows] == model
                    mine = rows[of_model]
                    logits = None
                    if space == "embedding" and profile.thresholds[2] < np.inf:
                        logits = batch.logits_matrix(mine, profile.means.shape[0])
                    scores = profile.score(matrix[of_model], logits)
                    readings.anomalous[mine] |= scores.flagged
                    readings.scores[mine, columns] = np.column_stack([scores.mahalanobis, scores.knn, scores.energy])
                    readings.ratios[mine, columns] = profile.ratios(scores)
        return readings

    @staticmethod
    def _score_groups(batch: EventBatch, anomalous: np.ndarray, query_flagged: np.ndarray) -> list[ScoreGroup]:
        """Embeddings per (model, dimension) with what this batch already decided, for the scorer; logits
        of the most common length travel with them."""
        detected = anomalous | query_flagged
        kind = np.where(batch.is_adversarial_canary, ADVERSARIAL_CANARY,
                        np.where(batch.is_canary, BENIGN_CANARY, PRODUCTION)).astype(np.int8)
        classes = batch.common_logit_classes
        groups = []
        for _, (rows, matrix) in batch.embedding_groups().items():
            for model in np.unique(batch.model[rows]):
                mine = batch.model[rows] == model
                r = rows[mine]
                groups.append(ScoreGroup(
                    model=model, event_id=batch.event_id[r], client_id=batch.client_id[r], ts=batch.ts[r],
                    confidence=batch.confidence[r], kind=kind[r], anomalous=anomalous[r], detected=detected[r],
                    embedding=matrix[mine],
                    logits=batch.logits_matrix(r, classes) if classes else None))
        return groups

    def _flagged(self, batch: EventBatch, flags: EventFlags, marks: QueryMarks, readings: ProfileReadings,
                 margin_rank: np.ndarray) -> FlaggedEvents:
        anomalous, near = flags.anomalous, flags.query_flagged
        rows = np.flatnonzero(anomalous | near)
        reason = np.where(anomalous[rows] & near[rows], "anomalous+near-duplicate",
                          np.where(anomalous[rows], "anomalous", "near-duplicate")).astype(object)
        return FlaggedEvents(batch.event_id[rows], batch.model[rows], batch.client_id[rows], batch.ts[rows], reason,
                             self._fingerprint_names(batch.take(rows), marks.exact_hash[rows]),
                             readings.scores[rows], readings.ratios[rows], batch.margin[rows], margin_rank[rows],
                             marks.own[rows], marks.cross[rows], marks.matched_client[rows])

    def _fingerprint_names(self, flagged: EventBatch, exact: np.ndarray) -> np.ndarray:
        """Flagged events only: the raw input's content hash, else the LSH signature of the embedding, else ""."""
        names = np.array([f"{int(h):016x}" if h else "" for h in exact.tolist()], dtype=object)
        for _dim, (rows, matrix) in flagged.embedding_groups().items():
            unnamed = exact[rows] == 0
            if unnamed.any():
                names[rows[unnamed]] = embedding_fingerprints(matrix[unnamed])
        return names


def _outcomes(batch: EventBatch, anomalous: np.ndarray, marks: QueryMarks) -> EventFlags:
    """Every counter of a batch: detections, ground-truth and canary outcomes (accuracy, fooling rate,
    detector TPR/FPR). Red-team and canary traffic is measured, never alerted on as production."""
    detected = anomalous | marks.flagged
    adversarial = batch.is_adversarial_canary
    wrong = batch.has_truth & ~batch.is_correct
    production = ~batch.is_canary
    labelled = batch.has_truth & production
    benign_canary = batch.is_canary & ~adversarial
    return EventFlags(
        events=np.ones(len(batch), bool), traffic_events=production, anomalous=anomalous & production,
        queries=marks.fresh & production, duplicates=marks.duplicate, query_flagged=marks.flagged & production,
        own_near_dup=marks.own & production, cross_near_dup=marks.cross & production,
        private_near_dup=marks.own & ~marks.cross & production,
        labelled=labelled, errors=labelled & wrong, adv_canary=adversarial, adv_fooled=adversarial & wrong,
        adv_missed=adversarial & ~detected, benign_canary=benign_canary, benign_flagged=benign_canary & detected,
        clean_events=~detected & production)


def rank_bins(ranks: np.ndarray) -> np.ndarray:
    """Bin of each margin rank in the ``margin_rank`` histogram (equal bins of [0, 1])."""
    return np.clip((np.nan_to_num(ranks) * RANK_BINS).astype(np.int64), 0, RANK_BINS - 1)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """Bin of each profile score (on its threshold's scale) in the ``score`` histogram."""
    return np.searchsorted(np.asarray(SCORE_EDGES), np.nan_to_num(scores, nan=-np.inf), side="right")


def label_bins(labels: np.ndarray) -> np.ndarray:
    """Each predicted label's entropy bin: a CRC-32 of the label, hashed once per distinct label.

    >>> bins = label_bins(np.array(["7", "3", "7"], dtype=object))
    >>> bool(bins[0] == bins[2]), bool(((0 <= bins) & (bins < ENTROPY_BINS)).all())
    (True, True)
    """
    if not len(labels):
        return np.empty(0, np.int64)
    distinct, inverse = np.unique(labels.astype(str), return_inverse=True)
    bins = np.array([zlib.crc32(label.encode()) % ENTROPY_BINS for label in distinct.tolist()], np.int64)
    return bins[inverse]


def _embedding_bins(batch: EventBatch, input_bin: np.ndarray) -> None:
    """Events with an embedding but no raw input: the sides of the first hyperplanes of their LSH
    (``ENTROPY_BINS`` is a power of two)."""
    for dim, (rows, matrix) in batch.embedding_groups().items():
        unbinned = input_bin[rows] < 0
        if unbinned.any():
            signatures = planes_for(dim).signatures(matrix[unbinned])
            input_bin[rows[unbinned]] = (signatures & np.uint64(ENTROPY_BINS - 1)).astype(np.int64)
