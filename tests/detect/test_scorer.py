"""Remote embedding scoring (ingest -> score-requests -> scorer -> deltas) counts exactly what
scoring embeddings inside ingest counts."""

import numpy as np
import pytest

from monitor.alerting.alerter import Alerter
from monitor.contracts.score_requests import ScoreRequestBatch
from monitor.contracts.sli import BAD_COUNTERS, SliRows
from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.parsing import parse_batch
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
