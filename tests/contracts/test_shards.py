"""Splitting an sli-buckets message over a sharded alerter's partitions: nothing lost, nothing counted twice."""

import numpy as np
import pytest

from monitor.contracts.edges import MatchEdges
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.shards import MODEL_STAGE_COLUMNS, shard_of, split
from monitor.contracts.sli import VALUE_COLUMNS, SliRows
from monitor.contracts.sli_buckets import SliBatch


def batch(clients=40, seed=0):
    rng = np.random.default_rng(seed)
    n = 500
    client = rng.choice(np.array([f"c{i}" for i in range(clients)], dtype=object), n)
    model = rng.choice(np.array(["m1", "m2"], dtype=object), n)
    ts = np.sort(rng.uniform(0, 180, n))
    flags = {"events": np.ones(n, bool), "queries": rng.random(n) < 0.8, "cross_near_dup": rng.random(n) < 0.1,
             "anomalous": rng.random(n) < 0.05}
    rows = SliRows.from_columns(bucket=(ts // 60).astype(np.int64) * 60, model=model, client=client, ts=ts,
                                flags=flags, confidence=rng.random(n))
    picked = rng.choice(n, 30, replace=False)
    flagged = FlaggedEvents.of([f"e{i}" for i in picked], model[picked].tolist(), client[picked].tolist(), ts[picked],
                               ["anomalous"] * 30, [f"f{i}" for i in picked])
    edges = MatchEdges.of([0, 60], ["m1", "m2"], ["c1", "c2"], ["c3", "c4"], [2.0, 1.0])
    return SliBatch("ingest-0", 170.0, 7, {"inference-logs/0": (0, n)}, rows, flagged, edges=edges,
                    partitions={"inference-logs/0": 170.0}, inputs=("inference-logs", 1))


@pytest.mark.parametrize("partitions", [2, 3, 8])
def test_every_client_row_lands_in_one_shard_and_every_part_carries_the_population(partitions):
    whole = batch()
    parts = split(whole, partitions)
    assert len(parts) == partitions
    shards = SliRows.concat([p.rows for p in parts[1:]])
    assert len(shards) == len(whole.rows)
    assert np.allclose(shards.values.sum(axis=0), whole.rows.values.sum(axis=0))
    for shard, part in enumerate(parts[1:], start=1):
        assert set(shard_of(part.rows.model, part.rows.client, partitions)) <= {shard}
        assert set(shard_of(part.flagged.model, part.flagged.client_id, partitions)) <= {shard}
        assert not len(part.edges) and part.late == 0
    totals = whole.rows.model_totals()
    for part in parts:
        assert np.array_equal(part.population.values, totals.values) and part.population.client.tolist() == ["", ""] * 3
        assert (part.instance, part.watermark, part.offsets, part.partitions, part.inputs) == (
            whole.instance, whole.watermark, whole.offsets, whole.partitions, whole.inputs)
    stage = parts[0]
    kept = [VALUE_COLUMNS.index(c) for c in MODEL_STAGE_COLUMNS]
    others = np.setdiff1d(np.arange(len(VALUE_COLUMNS)), kept)
    assert not stage.rows.values[:, others].any() and np.isinf(stage.rows.first).all()
    assert np.allclose(stage.rows.values[:, kept].sum(axis=0), whole.rows.values[:, kept].sum(axis=0))
    assert len(stage.flagged) == len(whole.flagged) == sum(len(p.flagged) for p in parts[1:])
    assert len(stage.edges) == len(whole.edges) and stage.late == whole.late


def test_one_partition_is_the_whole_message_and_a_part_survives_the_wire():
    whole = batch()
    assert split(whole, 1) == [whole]
    part = split(whole, 3)[1]
    back = SliBatch.decode(part.encode())
    assert np.array_equal(back.population.values, part.population.values)
    assert back.rows.client.tolist() == part.rows.client.tolist()
    assert SliBatch.decode(whole.encode()).population is None


def test_shards_are_stable_and_spread():
    models = np.array(["m"] * 1000, dtype=object)
    clients = np.array([f"client-{i}" for i in range(1000)], dtype=object)
    shards = shard_of(models, clients, 5)
    assert np.array_equal(shards, shard_of(models, clients, 5))
    counts = np.bincount(shards, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 200  # four client shards, about 250 each
