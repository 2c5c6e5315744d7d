"""A sharded alerter (a model stage and client shards) gives the transitions one alerter gives, also after a
restart of every partition from its part of the store."""

import dataclasses

import numpy as np
import pytest

from monitor.alerting.alerter import Alerter
from monitor.alerting.durable import EXPIRE_EVERY_BUCKETS, DurableAlerter
from monitor.alerting.shard_store import PartitionStore
from monitor.alerting.sharded import ShardedAlerter
from monitor.alerting.standout import ClientStandoutEvaluator
from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.shards import role_of
from monitor.contracts.sli import VALUE_COLUMNS, SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import load_rules_text

RULES = load_rules_text("""
slos:
  - {name: anomaly, sli: input_anomaly_rate, objective: 0.99, min_events: 20, scope: client, severities: [page]}
  - {name: anomaly-model, sli: input_anomaly_rate, objective: 0.995, min_events: 20}
drift:
  - {name: drift, detector: page_hinkley, series: clean_confidence_mean, delta: 0.005, threshold: 0.2}
clients:
  - {name: standout, statistics: {own_near_duplicate: {min_effect: 0.7}}, min_queries: 20, half_life: 5m}
groups:
  - {name: sybil, min_keys: 4, min_fresh_share: 0, min_queries: 3}
""")
BENIGN = [f"k{i:02d}" for i in range(24)]
SYBIL = [f"s{i}" for i in range(6)]


def stream(minutes=150, seed=1):
    """Per-minute batches of two ingest instances: 24 benign clients, one that probes with its own near-duplicates
    (minutes 40-70), one whose inputs turn anomalous (50-80), six keys whose queries chain (90-110), and the
    population's confidence dropping at minute 120."""
    rng = np.random.default_rng(seed)
    batches = []
    for minute in range(minutes):
        for instance in ("ingest-0", "ingest-1"):
            sybil = SYBIL if 90 <= minute < 110 else []
            clients = np.array(BENIGN + ["probe", "victim"] + sybil, dtype=object).repeat(3)
            n = len(clients)
            ts = minute * 60 + np.sort(rng.uniform(0, 60, n))
            probing = (clients == "probe") & (40 <= minute < 70)
            chained = np.isin(clients, SYBIL)
            anomalous = ((clients == "victim") & (50 <= minute < 80)) | (rng.random(n) < 0.002)
            confidence = np.clip(rng.normal(0.95 if minute < 120 else 0.7, 0.03, n), 0, 1)
            flags = {"events": np.ones(n, bool), "traffic_events": np.ones(n, bool), "queries": np.ones(n, bool),
                     "anomalous": anomalous, "clean_events": ~anomalous, "own_near_dup": probing,
                     "cross_near_dup": chained}
            rows = SliRows.from_columns(bucket=(ts // 60).astype(np.int64) * 60, model=np.full(n, "m", dtype=object),
                                        client=clients, ts=ts, flags=flags, confidence=confidence)
            others = np.where(chained, np.roll(clients, 3), "").astype(object)
            edges = MatchEdges.from_events((ts // 60).astype(np.int64) * 60, np.full(n, "m", dtype=object), clients,
                                           others)
            suspicious = np.flatnonzero(anomalous | probing)
            flagged = FlaggedEvents.of([f"e{minute}-{instance}-{i}" for i in suspicious], ["m"] * len(suspicious),
                                       clients[suspicious].tolist(), ts[suspicious], ["anomalous"] * len(suspicious),
                                       [f"f{i}" for i in suspicious])
            batches.append(SliBatch(instance, float(ts.max()), 0, {"inference-logs/0": (0, n)}, rows, flagged,
                                    edges=edges))
    return batches


OPTIONS = {"bucket_s": 60, "grace_s": 60, "idle_source_s": 1e9}


def unsharded(batches):
    alerter = DurableAlerter(RULES, {}, **OPTIONS)
    return [a for offset, batch in enumerate(batches) for a in alerter.apply(offset, batch, now=0.0)]


def transitions(alerts):
    return sorted((a.rule, a.client_id or "", a.status, a.resolved_at or a.fired_at, a.alert_id) for a in alerts)


@pytest.fixture(scope="module")
def oracle():
    batches = stream()
    alerts = unsharded(batches)
    assert {a.rule.split("/")[0] for a in alerts} == {"anomaly", "anomaly-model", "drift", "standout", "sybil"}
    return batches, alerts


@pytest.mark.parametrize("partitions", [2, 3, 5])
def test_a_sharded_alerter_gives_the_transitions_of_one(oracle, partitions):
    batches, alerts = oracle
    sharded = ShardedAlerter(RULES, partitions, **OPTIONS)
    got = [a for offset, batch in enumerate(batches) for a in sharded.apply(offset, batch, now=0.0)]
    assert transitions(got) == transitions(alerts)

    def readings(found):  # the rank test's figures: against the whole population, not against the shard's clients
        return [a.evidence["statistics"] for a in found if a.rule.startswith("standout") and a.status == "firing"]

    assert readings(got) and readings(got) == readings(alerts)
    drift = next(a for a in got if a.rule.startswith("drift"))
    assert "no per-client figures here" in drift.summary  # the model stage sees per-model sums only


def test_every_partition_restarted_from_its_part_of_the_store_goes_on_alike(oracle):
    batches, alerts = oracle
    store: dict = {}
    first = ShardedAlerter(RULES, 3, store, **OPTIONS)
    got = [a for offset, batch in enumerate(batches[:150]) for a in first.apply(offset, batch, now=0.0)]
    again = ShardedAlerter(RULES, 3, store, **OPTIONS)  # a rebuild of each partition from the same store
    assert transitions(again.firing) == transitions(first.firing)
    got += [a for offset, batch in enumerate(batches) if offset >= 150 for a in again.apply(offset, batch, now=0.0)]
    assert transitions(got) == transitions(alerts)
    assert any(key.startswith("§2\x1e") for key in store) and "progress" in store


def test_roles_split_the_rules():
    models, clients = Alerter(RULES, role="models"), Alerter(RULES, role="clients")
    assert [e.slo.name for e in models.slos] == ["anomaly-model"] and [e.slo.name for e in clients.slos] == ["anomaly"]
    assert models.drifts and models.groups and not models.clients
    assert clients.clients and not (clients.drifts or clients.groups or clients.no_data)
    assert [role_of(p, 3) for p in range(3)] == ["models", "clients", "clients"]


def test_standout_against_population_sums_is_standout_against_every_client():
    """A shard holding every client and fed their sums judges them as the unsharded evaluator does."""
    rule = RULES.clients[0]
    plain, fed = ClientStandoutEvaluator(rule, 60), ClientStandoutEvaluator(rule, 60, population_from_totals=True)
    seen = {"plain": [], "fed": []}
    for minute, batch in enumerate(stream(minutes=90)[::2]):
        plain.ingest(batch.rows)
        fed.ingest(batch.rows)
        fed.ingest_population(batch.rows.model_totals())
        seen["plain"] += plain.evaluate(minute + 1)
        seen["fed"] += fed.evaluate(minute + 1)
    assert seen["plain"] and transitions(seen["fed"]) == transitions(seen["plain"])
    zs = [[s["z"] for s in a.evidence["statistics"]] for a in seen["fed"]]
    assert zs == [[s["z"] for s in a.evidence["statistics"]] for a in seen["plain"]]


def test_partitions_of_one_store_do_not_see_each_other():
    table: dict = {}
    zero, one = PartitionStore(table, 0), PartitionStore(table, 1)
    zero["a"], one["a"], one["b"] = 1, 2, 3
    assert dict(zero) == {"a": 1} and dict(one) == {"a": 2, "b": 3}
    del one["a"]
    assert "a" not in one and "a" in zero and len(one) == 1 and zero.get("b") is None


def test_a_client_shard_keeps_population_sums_only_as_long_as_its_clients_rows():
    rules = load_rules_text("clients: [{name: standout, statistics: {own_near_duplicate: {min_effect: 0.7}}, "
                            "min_queries: 20, half_life: 5m, resolve_after: 10m}]")
    sharded = ShardedAlerter(rules, 2, **OPTIONS)
    for offset, batch in enumerate(stream(minutes=240)):
        sharded.apply(offset, batch, now=0.0)
    shard = sharded.partitions[1]
    cutoff = shard._client_cutoff(shard.alerter.evaluated_until)
    kept = [bucket for _, bucket, _ in shard.state.totals()]
    swept = cutoff - EXPIRE_EVERY_BUCKETS * 60  # expiry sweeps every few buckets
    assert kept and min(kept) >= swept > 0 and shard.client_retention_s < 2 * 3600
    model_stage = [bucket for _, bucket, _ in sharded.partitions[0].state.totals()]
    assert min(model_stage) < swept  # the model stage keeps them for its SLO windows


def with_scorer(batches):
    """The batches as ingest leaving embeddings to a scorer: ingest's rows without the anomalous counts, and after
    each, the scorer's message on ``scores`` with those counts (counter changes) and the suspicious events."""
    out = []
    for offset, batch in enumerate(batches):
        rows = batch.rows
        changes = SliRows(rows.bucket, rows.model, rows.client, np.zeros_like(rows.values), rows.first.copy())
        column = list(VALUE_COLUMNS).index("anomalous")
        changes.values[:, column] = rows.values[:, column]
        untimed = np.full_like(rows.first, np.inf)
        ingest_rows = SliRows(rows.bucket, rows.model, rows.client, rows.values.copy(), untimed)
        ingest_rows.values[:, column] = 0.0
        ingest = dataclasses.replace(batch, rows=ingest_rows, flagged=FlaggedEvents.empty(), remote_scoring=True)
        scorer = SliBatch("scorer-0", batch.watermark, 0, {}, changes.take(changes.values[:, column] > 0),
                          batch.flagged, role="scorer")
        out += [("sli-buckets", offset, ingest), ("scores", offset, scorer)]
    return out


def test_the_scorers_counter_changes_reach_the_shards_as_ingests_rows_do():
    messages = with_scorer(stream(minutes=100))
    one = DurableAlerter(RULES, {}, **OPTIONS)
    sharded = ShardedAlerter(RULES, 3, **OPTIONS)
    want = [a for topic, offset, m in messages for a in one.apply(offset, m, now=0.0, topic=topic)]
    got = [a for topic, offset, m in messages for a in sharded.apply(offset, m, now=0.0, topic=topic)]
    assert {a.rule.split("/")[0] for a in want} >= {"anomaly", "anomaly-model"}  # fired on the scorer's counts
    assert transitions(got) == transitions(want)
