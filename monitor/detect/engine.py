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
>>> out = engine.process(parse_batch(records).batch)   # queries are matched once their bucket has closed
>>> int(out.rows.column("events").sum()), int(out.rows.column("query_flagged").sum()), out.watermark
(40, 0, 39.0)
>>> int(engine.finish().rows.column("query_flagged").sum()) > 30   # the end of input closes every bucket
True
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, fields, replace

import numpy as np

from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import SCORE_COLUMNS, FlaggedEvents
from monitor.contracts.margin_counts import MarginCounts
from monitor.contracts.match_requests import MatchGroup, MatchRequestBatch
from monitor.contracts.score_requests import ADVERSARIAL_CANARY, BENIGN_CANARY, PRODUCTION, ScoreGroup
from monitor.contracts.sli import ENTROPY_BINS, RANK_BINS, SCORE_EDGES, SliRows
from monitor.detect.batch import EventBatch, Groups
from monitor.detect.fingerprint import Fingerprinter, content_hashes
from monitor.detect.lsh import embedding_fingerprints, planes_for
from monitor.detect.margin_ranks import DEFAULT_LAG_S, MarginRanks, combined_counts, count_margins
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher, QueryVerdicts
from monitor.detect.profiles import Profile
from monitor.detect.text_fingerprint import TextFingerprinter, text_content_hashes


@dataclass(frozen=True)
class EngineSettings:
    fingerprint_secret: bytes
    bucket_s: int = 60
    grace_s: float = 60.0
    fingerprint_generation_queries: int = 50_000
    fingerprint_generation_s: float = 24 * 3600.0
    fingerprint_postings_cap: int = MatcherSettings.postings_cap
    remote_embedding_scoring: bool = False  # embeddings go to the scorer worker instead of being scored here
    remote_matching: bool = False  # fingerprints go to the matcher worker instead of this engine's own matcher

    def matcher_settings(self) -> MatcherSettings:
        return MatcherSettings(self.bucket_s, self.grace_s, self.fingerprint_postings_cap,
                               self.fingerprint_generation_queries, self.fingerprint_generation_s)


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
    """Each event's raw-input fingerprint (False/0 where none); what it matches is the matcher's to say."""

    fingerprinted: np.ndarray  # a query: its raw input was fingerprinted
    exact_hash: np.ndarray  # uint64 content hash; 0 where none was fingerprinted
    input_bin: np.ndarray  # coarse input fingerprint for query entropy; -1: no input

    @classmethod
    def none(cls, n: int) -> QueryMarks:
        return cls(np.zeros(n, bool), np.zeros(n, np.uint64), np.full(n, -1, np.int64))


@dataclass(frozen=True)
class EventSignals:
    """Every profile detector's reading of every event of a batch, in batch order (NaN where one does not apply);
    the query detectors' come later, as ``QueryVerdicts``, once the event's bucket has closed."""

    event_id: np.ndarray
    model: np.ndarray
    client_id: np.ndarray
    ts: np.ndarray
    confidence: np.ndarray
    score_ratio: np.ndarray  # largest profile score on the threshold's scale (0: reference median, above 1: anomalous)
    anomalous: np.ndarray  # bool
    margin: np.ndarray  # top-1 minus top-2 probability; NaN where the model logged neither logits nor probabilities
    margin_rank: np.ndarray  # the margin's rank among the live population's of its class and score band (NaN)

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def empty(cls) -> EventSignals:
        return cls(*(np.empty(0, t) for t in (object, object, object, float, float, float, bool, float, float)))


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
    match_groups: list[MatchGroup] = field(default_factory=list)  # for the matcher, with remote matching
    verdicts: QueryVerdicts = field(default_factory=QueryVerdicts.empty)  # queries of closed buckets, matched
    margin_counts: list[MarginCounts] = field(default_factory=list)  # what the closed minutes taught the margins

    def with_matches(self, matches: MatchResult) -> BatchResult:
        """The batch's own rows and evidence with what the matcher decided about closed buckets."""
        return replace(self, rows=SliRows.concat([self.rows, matches.rows]).combined(),
                       flagged=FlaggedEvents.concat([self.flagged, matches.flagged]),
                       edges=MatchEdges.concat([self.edges, matches.edges]).combined(), verdicts=matches.verdicts)

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
        self._text = TextFingerprinter(settings.fingerprint_secret)
        self.matcher = None if settings.remote_matching else OrderedMatcher(settings.matcher_settings())
        self._unscored: list[ScoreGroup] = []  # embeddings for the scorer, waiting for their queries' verdicts
        # ranked against the minutes over 10 minutes before (at least the grace period and a minute): see MarginRanks
        self.margins = MarginRanks(bucket_s=settings.bucket_s,
                                   lag_s=max(DEFAULT_LAG_S, settings.grace_s + settings.bucket_s))
        self._unshared: list[MarginCounts] = []  # what the open minutes taught it, for the other workers at their close
        self.watermark = -np.inf

    @property
    def fingerprint_memory_bytes(self) -> int:
        return 0 if self.matcher is None else self.matcher.memory_bytes

    @property
    def fingerprint_lookback_s(self) -> float:
        """How far back its own matcher matches a query (``inf``: nothing forgotten yet, or no matcher here)."""
        return math.inf if self.matcher is None else self.matcher.lookback_s

    def process(self, batch: EventBatch, watermark: float | None = None) -> BatchResult:
        """One batch's rows and evidence, with the own matcher's verdicts on the buckets ``watermark`` (default: the
        latest event time seen) closed; with remote matching, the batch's fingerprints for the matcher instead."""
        n = len(batch)
        late = int((batch.ts < self.watermark - self.settings.grace_s).sum())
        if n:
            self.watermark = max(self.watermark, float(batch.ts.max()))
        features = batch.feature_groups()
        marks, fingerprints = self._fingerprint(batch, features)
        _embedding_bins(batch, marks.input_bin)
        readings = self._score(batch, features)
        anomalous, score_ratio, statistic = readings.anomalous, readings.score_ratio, readings.statistic
        if self.settings.remote_embedding_scoring:
            self._unscored += self._score_groups(batch, anomalous)
        flags = _outcomes(batch, anomalous, marks)
        production = flags.traffic_events
        buckets = (batch.ts // self.settings.bucket_s).astype(np.int64) * self.settings.bucket_s
        margin_rank, taught = self._margin_ranks(batch, statistic, production, buckets)
        margin_counts = self._shared_margins(taught, self.watermark if watermark is None else watermark)
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
                               anomalous, batch.margin, margin_rank)
        groups = [_match_group(batch, kind, threshold, rows_of, hashes, marks.exact_hash[rows_of], anomalous)
                  for kind, threshold, rows_of, hashes in fingerprints]
        result = BatchResult(rows, self._flagged(batch, anomalous, marks, readings, margin_rank), self.watermark, late,
                             signals, match_groups=groups if self.matcher is None else [], margin_counts=margin_counts)
        if self.matcher is None:
            return replace(result, score_groups=self._release_unscored(QueryVerdicts.empty(), float("inf")))
        self.matcher.add(MatchRequestBatch("engine", self.watermark if watermark is None else watermark, groups), 0.0)
        matches = self.matcher.advance(now=0.0)
        return replace(result.with_matches(matches),
                       score_groups=self._release_unscored(matches.verdicts, self.matcher.sealed_until))

    def finish(self) -> BatchResult:
        """End of input: the own matcher's verdicts on every query still waiting for its bucket to close."""
        result = BatchResult(SliRows.empty(), FlaggedEvents.empty(), self.watermark, 0, EventSignals.empty(),
                             margin_counts=self._shared_margins([], float("inf")))
        matches = MatchResult.empty() if self.matcher is None else self.matcher.flush()
        return replace(result.with_matches(matches),
                       score_groups=self._release_unscored(matches.verdicts, float("inf")))

    def _release_unscored(self, verdicts: QueryVerdicts, until: float) -> list[ScoreGroup]:
        """Embeddings for the scorer once their queries are matched (events before ``until``), each marked
        detected if a fingerprint matched it, so that the scorer's changes to the clean, missed and
        false-positive counts do not repeat the matcher's."""
        near = verdicts.event_id[verdicts.near].astype(str)
        ready, waiting = [], []
        for group in self._unscored:
            due = group.ts < until
            if due.any():
                part = group.take(due)
                ready.append(replace(part, detected=part.detected | np.isin(part.event_id.astype(str), near)))
            if not due.all():
                waiting.append(group.take(~due))
        self._unscored = waiting
        return ready

    def learn_margins(self, counts: list[MarginCounts]) -> None:
        """Other workers' margin counts (``margin-counts``): their partitions' traffic joins the population this
        worker ranks against, as all of it does in replay."""
        for part in counts:
            self.margins.add(part, peer=True)

    def _shared_margins(self, taught: list[MarginCounts], until: float) -> list[MarginCounts]:
        """The counts of the minutes closed by ``until`` (their end and the grace period passed), one part per model;
        the open minutes' wait, summed. A minute's counts then go to the other workers once, not a batch's: at high
        rates a minute's cells are far fewer than its events. A late event's count goes at the next batch."""
        ready, waiting = [], []
        for part in self._unshared + taught:
            closed = part.bucket + self.settings.bucket_s + self.settings.grace_s <= until
            ready += [part.take(closed)] if closed.any() else []
            waiting += [part.take(~closed)] if not closed.all() else []
        self._unshared = combined_counts(waiting)
        return combined_counts(ready)

    def _margin_ranks(self, batch: EventBatch, score_ratio: np.ndarray, production: np.ndarray,
                      buckets: np.ndarray) -> tuple[np.ndarray, list[MarginCounts]]:
        """Let production traffic teach the population, then rank each margin against the population its bucket sees
        (``MarginRanks``: the buckets that ended ``lag_s`` before it began); and what the traffic taught it."""
        ranks = np.full(len(batch), np.nan)
        taught = []
        margin = batch.margin
        names, codes = batch.model_codes
        for code in np.unique(codes[np.isfinite(margin)]).tolist():
            model, mine = names[code], np.flatnonzero(codes == code)
            learn = mine[production[mine]]  # learnt first: no event sees its own bucket, nor the lag before it
            counts = count_margins(model, batch.label[learn], score_ratio[learn], margin[learn], buckets[learn])
            if len(counts):
                self.margins.add(counts)
                taught.append(counts)
            ranks[mine] = self.margins.rank(model, batch.label[mine], score_ratio[mine], margin[mine], buckets[mine])
        return ranks, taught

    def _fingerprint(self, batch: EventBatch, features: Groups
                     ) -> tuple[QueryMarks, list[tuple[str, int, np.ndarray, np.ndarray]]]:
        """Raw numeric inputs (Blacklight) and texts (MinHash): each event's marks, and per input kind (the
        matcher's index: the input length, or "text") its match threshold, rows and hashes."""
        marks = QueryMarks.none(len(batch))
        fingerprints = []
        for dim, (rows, matrix) in features.items():
            fingerprinter = self._numeric_fingerprinter(dim)
            if fingerprinter is not None:
                fingerprints.append((str(dim), fingerprinter.threshold, rows, fingerprinter.hashes(matrix)))
                marks.exact_hash[rows] = content_hashes(matrix, self.settings.fingerprint_secret)
                marks.input_bin[rows] = fingerprinter.coarse_bins(matrix, ENTROPY_BINS)
        rows, texts = batch.texts
        if len(rows):
            hashes = self._text.hashes(texts)
            fingerprints.append(("text", self._text.threshold, rows, hashes))
            marks.exact_hash[rows] = text_content_hashes(texts)
            marks.input_bin[rows] = (hashes[:, 0] % np.uint64(ENTROPY_BINS)).astype(np.int64)  # the largest: a MinHash
        for _, _, rows, _ in fingerprints:
            marks.fingerprinted[rows] = True
        return marks, fingerprints

    def _numeric_fingerprinter(self, dim: int) -> Fingerprinter | None:
        if dim not in self._fingerprinters:
            try:
                self._fingerprinters[dim] = Fingerprinter.for_dimension(dim, self.settings.fingerprint_secret)
            except ValueError:
                return None  # too short to fingerprint (fewer values than a window)
        return self._fingerprinters[dim]

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
                for model, of_model in batch.model_rows(rows):
                    profile = self.profile.get(model, space)
                    if profile is None or profile.dim != dim:
                        continue
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
    def _score_groups(batch: EventBatch, anomalous: np.ndarray) -> list[ScoreGroup]:
        """Embeddings per (model, dimension) with what this batch already decided, for the scorer; logits
        of the most common length travel with them."""
        detected = anomalous
        kind = np.where(batch.is_adversarial_canary, ADVERSARIAL_CANARY,
                        np.where(batch.is_canary, BENIGN_CANARY, PRODUCTION)).astype(np.int8)
        classes = batch.common_logit_classes
        groups = []
        for _, (rows, matrix) in batch.embedding_groups().items():
            for model, mine in batch.model_rows(rows):
                r = rows[mine]
                groups.append(ScoreGroup(
                    model=model, event_id=batch.event_id[r], client_id=batch.client_id[r], ts=batch.ts[r],
                    confidence=batch.confidence[r], kind=kind[r], anomalous=anomalous[r], detected=detected[r],
                    embedding=matrix[mine],
                    logits=batch.logits_matrix(r, classes) if classes else None))
        return groups

    def _flagged(self, batch: EventBatch, anomalous: np.ndarray, marks: QueryMarks, readings: ProfileReadings,
                 margin_rank: np.ndarray) -> FlaggedEvents:
        """Production events a profile score flagged (the matcher reports near-duplicates)."""
        rows = np.flatnonzero(anomalous & ~batch.is_canary)
        return FlaggedEvents.of(batch.event_id[rows], batch.model[rows], batch.client_id[rows], batch.ts[rows],
                                ["anomalous"] * len(rows),
                                self._fingerprint_names(batch.take(rows), marks.exact_hash[rows]),
                                scores=readings.scores[rows], ratios=readings.ratios[rows], margin=batch.margin[rows],
                                margin_rank=margin_rank[rows])

    def _fingerprint_names(self, flagged: EventBatch, exact: np.ndarray) -> np.ndarray:
        """Flagged events only: the raw input's content hash, else the LSH signature of the embedding, else ""."""
        names = np.array([f"{int(h):016x}" if h else "" for h in exact.tolist()], dtype=object)
        for _dim, (rows, matrix) in flagged.embedding_groups().items():
            unnamed = exact[rows] == 0
            if unnamed.any():
                names[rows[unnamed]] = embedding_fingerprints(matrix[unnamed])
        return names


def _match_group(batch: EventBatch, kind: str, threshold: int, rows: np.ndarray, hashes: np.ndarray,
                 exact: np.ndarray, anomalous: np.ndarray) -> MatchGroup:
    traffic = np.where(batch.is_adversarial_canary[rows], ADVERSARIAL_CANARY,
                       np.where(batch.is_canary[rows], BENIGN_CANARY, PRODUCTION)).astype(np.int8)
    return MatchGroup(kind, threshold, batch.model[rows], batch.event_id[rows], batch.client_id[rows], batch.ts[rows],
                      traffic, anomalous[rows], batch.confidence[rows], hashes, exact)


def _outcomes(batch: EventBatch, anomalous: np.ndarray, marks: QueryMarks) -> EventFlags:
    """Every counter of a batch as far as the profile scores tell: detections, ground-truth and canary outcomes
    (accuracy, fooling rate, detector TPR/FPR); the matcher's verdicts change them later (``match_deltas``).
    Red-team and canary traffic is measured, never alerted on as production."""
    detected = anomalous
    no = np.zeros(len(batch), bool)
    adversarial = batch.is_adversarial_canary
    wrong = batch.has_truth & ~batch.is_correct
    production = ~batch.is_canary
    labelled = batch.has_truth & production
    benign_canary = batch.is_canary & ~adversarial
    return EventFlags(
        events=np.ones(len(batch), bool), traffic_events=production, anomalous=anomalous & production,
        queries=marks.fingerprinted & production, duplicates=no, query_flagged=no, own_near_dup=no, cross_near_dup=no,
        private_near_dup=no,
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
