"""How one batch's ``sli-buckets`` message is split over a sharded alerter's partitions.

With one partition, the message goes whole (an unsharded alerter runs every rule). With ``n > 1``:

* partition 0 is the **model stage**: the model-wide rules (``scope: model`` SLOs, drift, no-data, Sybil
  groups). It gets the batch's rows summed per (model, bucket) as ``population``, the per-client counters the
  group rule reads (:data:`MODEL_STAGE_COLUMNS`; the others zero, rows without them left out), every
  suspicious event and every match edge;
* partitions 1 to ``n - 1`` are **client shards**: the per-client rules (``client-standout``, ``scope: client``
  SLOs) for the clients whose ``(model, client)`` hashes to them (:func:`shard_of`, stable across processes).
  Each gets its clients' rows and suspicious events and the same ``population``: a client is judged against
  the whole live population, not against its shard's.

Every partition gets a message for every batch, rows or not, so each shard hears every source's watermark.

>>> import numpy as np
>>> from monitor.contracts.sli import SliRows
>>> rows = SliRows.from_columns(bucket=np.zeros(4, np.int64), model=np.array(["m"] * 4, dtype=object),
...     client=np.array(["a", "b", "c", "d"], dtype=object), ts=np.zeros(4),
...     flags={"events": np.ones(4, bool), "queries": np.array([1, 1, 0, 0], bool)}, confidence=np.ones(4))
>>> parts = split(SliBatch("ingest-0", 30.0, 0, {}, rows), partitions=3)
>>> [len(p.rows) for p in parts], [p.population.column("events").tolist() for p in parts]
([2, 1, 3], [[4.0], [4.0], [4.0]])
>>> parts[0].rows.column("events").tolist(), parts[0].rows.column("queries").tolist()   # the model stage's
([0.0, 0.0], [1.0, 1.0])
>>> sorted(c for p in parts[1:] for c in p.rows.client)   # each client in exactly one shard
['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from monitor.contracts.edges import MatchEdges
from monitor.contracts.sli import SliRows, value_index
from monitor.contracts.sli_buckets import SliBatch

#: The per-client counters the model stage reads: the Sybil group rule's queries and cross-client near-duplicates.
MODEL_STAGE_COLUMNS = ("queries", "cross_near_dup")
_MODEL_STAGE_INDEX = [value_index(name) for name in MODEL_STAGE_COLUMNS]


def role_of(partition: int, partitions: int) -> str:
    """``"all"`` (unsharded), ``"models"`` (partition 0 of several) or ``"clients"`` (a client shard).

    >>> role_of(0, 1), role_of(0, 4), role_of(3, 4)
    ('all', 'models', 'clients')
    """
    if partitions <= 1:
        return "all"
    return "models" if partition == 0 else "clients"


def shard_of(models: np.ndarray, clients: np.ndarray, partitions: int) -> np.ndarray:
    """The client shard (1 to ``partitions - 1``) of each (model, client): CRC-32 of both, one step per distinct key.

    >>> shard_of(np.array(["m", "m"], dtype=object), np.array(["a", "a"], dtype=object), 5).tolist()
    [2, 2]
    """
    if not len(clients):
        return np.zeros(0, np.int64)
    keys, inverse = np.unique(models.astype(str) + "\x1f" + clients.astype(str), return_inverse=True)
    hashes = np.array([zlib.crc32(key.encode()) for key in keys.tolist()], np.int64)
    return (hashes % (partitions - 1) + 1)[inverse]


def split(batch: SliBatch, partitions: int) -> list[SliBatch]:
    """The message for each partition, in partition order (the batch itself where there is one)."""
    if partitions <= 1:
        return [batch]
    population = batch.rows.model_totals()
    rows_shard = shard_of(batch.rows.model, batch.rows.client, partitions)
    flagged_shard = shard_of(batch.flagged.model, batch.flagged.client_id, partitions)
    parts = [dataclasses.replace(batch, rows=_model_stage_rows(batch.rows), population=population)]
    for shard in range(1, partitions):
        parts.append(dataclasses.replace(
            batch, rows=batch.rows.take(rows_shard == shard), flagged=batch.flagged.take(flagged_shard == shard),
            edges=MatchEdges.empty(), population=population, late=0))
    return parts


def _model_stage_rows(rows: SliRows) -> SliRows:
    """The rows with only :data:`MODEL_STAGE_COLUMNS` kept (first-bad times cleared), rows without them left out."""
    kept = rows.values[:, _MODEL_STAGE_INDEX]
    mine = kept.any(axis=1)
    values = np.zeros((int(mine.sum()), rows.values.shape[1]))
    values[:, _MODEL_STAGE_INDEX] = kept[mine]
    first = np.full_like(rows.first[mine], np.inf)
    return SliRows(rows.bucket[mine], rows.model[mine], rows.client[mine], values, first)

