"""Remote embedding scoring (ingest -> score-requests -> scorer -> deltas), alone and with remote matching
(scorer -> match-requests -> matcher), counts exactly what scoring embeddings inside ingest counts."""

import numpy as np
import pytest

from monitor.alerting.alerter import Alerter
from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.score_requests import ScoreRequestBatch
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows, histogram_columns
from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.matcher import MatcherSettings, OrderedMatcher
from monitor.detect.parsing import parse_batch
from monitor.detect.profiles import Profile
from monitor.detect.scorer import EmbeddingScorer
from monitor.sim.synth import Scenario
from monitor.spec.rules import default_rules_dir, load_rules


@pytest.fixture(scope="module")
def scenario():
    return Scenario.build(seed=3, duration_s=3600.0)


def totals(rows: SliRows) -> dict:
    rows = rows.combined()
    order = np.lexsort((rows.client.astype(str), rows.model.astype(str), rows.bucket))
    return {"keys": list(zip(rows.bucket[order], rows.model[order], rows.client[order], strict=True)),
            "values": rows.values[order], "first": rows.first[order]}


def test_remote_scoring_gives_the_same_counters_as_local(scenario):
    profile = scenario.reference_profile(per_model=2000)
    local = Engine(EngineSettings(fingerprint_secret=b"s"), profile)
    remote = Engine(EngineSettings(fingerprint_secret=b"s", remote_embedding_scoring=True), profile)
    scorer = EmbeddingScorer(profile)
    rules = load_rules(default_rules_dir())
    local_alerter, remote_alerter = Alerter(rules), Alerter(rules)
    local_rows, remote_rows, scored, local_alerts, remote_alerts = [], [], 0, [], []
    batches = [parse_batch(chunk.records).batch for chunk in scenario.chunks(chunk_s=300.0)]
    for batch in [*batches, None]:  # None: the end of input, every minute closed
        mine = local.process(batch) if batch is not None else local.finish()
        local_rows.append(mine.rows)
        local_alerter.ingest(mine.rows)
        local_alerts += local_alerter.advance(mine.watermark)
        result = remote.process(batch) if batch is not None else remote.finish()
        request = ScoreRequestBatch.decode(ScoreRequestBatch("i", result.watermark, result.score_groups).encode())
        scored_result = scorer.score(request)
        scored += scored_result.scored
        remote_rows += [result.rows, scored_result.rows]
        remote_alerter.ingest(result.rows)
        remote_alerter.ingest(scored_result.rows)
        remote_alerts += remote_alerter.advance(result.watermark)
    a, b = totals(SliRows.concat(local_rows)), totals(SliRows.concat(remote_rows))
    assert scored > 10_000
    assert a["keys"] == b["keys"]
    np.testing.assert_allclose(a["values"], b["values"], atol=1e-6)
    misses = BAD_COUNTERS.index("adv_missed")  # a first miss cannot be taken back (see score_deltas)
    np.testing.assert_array_equal(np.delete(a["first"], misses, axis=1), np.delete(b["first"], misses, axis=1))
    anomalous = SliRows.concat(local_rows).column("anomalous").sum()
    assert anomalous > 100  # the embedding scores matter in this traffic
    assert any(a.slo == "client-standout" and a.client_id == "key_wb_7731" for a in local_alerts)  # the white-box key
    assert [a.alert_id for a in remote_alerts] == [a.alert_id for a in local_alerts]


def test_remote_scoring_of_a_model_profiled_only_in_its_embeddings_ranks_margins_by_class_without_a_score_histogram(
        scenario):
    """README: with remote scoring, ingest has no score for a model whose raw inputs have no profile, so its rows
    carry no score histogram, and its margins are still ranked (per predicted class, no input-score band)."""
    full = scenario.reference_profile(per_model=2000)
    embeddings_only = Profile({name: p for name, p in full.models.items() if name.endswith("/embedding")},
                              full.baselines)
    first, second = (parse_batch(chunk.records).batch for chunk in list(scenario.chunks(chunk_s=900.0))[:2])
    counted = {}
    for remote in (False, True):
        engine = Engine(EngineSettings(fingerprint_secret=b"s", remote_embedding_scoring=remote), embeddings_only)
        engine.process(first)  # margins are ranked against the minutes that ended 10 minutes before theirs
        rows = engine.process(second).rows
        counted[remote] = {kind: rows.values[:, histogram_columns(kind)].sum() for kind in ("margin_rank", "score")}
    assert counted[False]["score"] > 1000 and counted[True]["score"] == 0
    assert counted[True]["margin_rank"] == counted[False]["margin_rank"] > 1000


def test_remote_scoring_and_remote_matching_together_count_what_ingest_alone_counts():
    """Ingest that leaves both embeddings and queries to other workers: the scorer passes each batch's queries
    on to the matcher with the events it flagged marked anomalous, so an event both flag leaves the clean,
    missed and false-positive counts once, as in one process. Passed on unmarked, they would count twice. A
    loose profile (5% of clean traffic flagged) has the scorer flag some of the matcher's near-duplicates."""
    scenario = Scenario.build(seed=3, duration_s=1800.0)
    profile = scenario.reference_profile(per_model=2000, fpr=0.05)
    local = Engine(EngineSettings(fingerprint_secret=b"s"), profile)
    remote = Engine(EngineSettings(fingerprint_secret=b"s", remote_embedding_scoring=True, remote_matching=True),
                    profile)
    scorer = EmbeddingScorer(profile)
    marked, unmarked = OrderedMatcher(MatcherSettings()), OrderedMatcher(MatcherSettings())
    local_rows, remote_rows, unmarked_rows, chunked = [], [], [], 0
    for chunk in scenario.chunks(chunk_s=300.0):
        batch = parse_batch(chunk.records).batch
        local_rows.append(local.process(batch).rows)
        result = remote.process(batch)
        request = ScoreRequestBatch("ingest-0", result.watermark, result.score_groups,
                                    MatchRequestBatch("ingest-0", result.watermark, result.match_groups))
        parts = request.chunks(max_bytes=64 * 1024)
        chunked += len(parts) > 1
        remote_rows.append(result.rows)
        unmarked_rows.append(result.rows)
        for part in parts:
            scored = scorer.score(ScoreRequestBatch.decode(part.encode()))
            assert scored.matches is not None
            remote_rows.append(scored.rows)
            unmarked_rows.append(scored.rows)
            for matcher, matches, rows in ((marked, scored.matches, remote_rows),
                                           (unmarked, part.matches, unmarked_rows)):
                matcher.add(MatchRequestBatch.decode(matches.encode()), now=0.0)
                rows.append(matcher.advance(now=0.0).rows)
    local_rows.append(local.finish().rows)
    remote_rows.append(marked.flush().rows)
    unmarked_rows.append(unmarked.flush().rows)
    a, b, c = (totals(SliRows.concat(rows)) for rows in (local_rows, remote_rows, unmarked_rows))
    assert chunked > 3  # requests were cut into messages, each with both parts of its events
    assert a["keys"] == b["keys"]
    np.testing.assert_allclose(a["values"], b["values"], atol=1e-6)
    misses = BAD_COUNTERS.index("adv_missed")  # a first miss cannot be taken back (see score_deltas)
    np.testing.assert_array_equal(np.delete(a["first"], misses, axis=1), np.delete(b["first"], misses, axis=1))
    clean = VALUE_COLUMNS.index("clean_events")
    assert c["values"][:, clean].sum() < a["values"][:, clean].sum() - 10  # unmarked: taken off twice
    both = SliRows.concat(local_rows)
    assert both.column("anomalous").sum() > 100 and both.column("query_flagged").sum() > 100
