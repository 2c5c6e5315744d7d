"""Each client against the live population: a client pages only when its queries stand out from every other
client's of the same model in the same minutes, so a shift that most clients share never pages anyone.

Per closed bucket, every (model, client) row adds its histograms of per-event statistics to the client's
decayed window (half-life ``half_life``): the margin's rank among the population's margins of its class and
input-score band (``margin_rank``; attacks stop at the decision boundary), the input profile score
(``input_score``), near-duplicates of the client's own earlier queries that no other client sent
(``private_near_duplicate``; black-box probing, Chen et al., without the repetition that popular content and
templates give everyone), or of its own queries whether shared or not (``own_near_duplicate``). A Mann-Whitney
rank test compares the client's histogram with the rest of the population's (ties corrected; decayed counts
as weights), giving the effect size AUC = P(client's value is more suspicious than a population value) and z.

False-alarm math. With A active clients, S statistics and one test per client, statistic and bucket
(B buckets a month), a per-test error rate alpha keeps false pages at F per month when
A x S x B x alpha <= F (Bonferroni): 100,000 clients x 3 statistics x 43,200 one-minute buckets at F = 1 gives
alpha = 7.7e-11, one-sided z >= 6.40 (``ClientRule.z_threshold``). The null of the rank test is that the
client is exchangeable with the population; benign clients are not exactly (their devices and class mixes
differ), which is why a client must also show an effect of at least ``min_effect`` (AUC). The scenario
benchmark measures what benign clients reach: the thresholds shipped in ``rules/slos.yaml`` were chosen on
one family and are reported on all (BENCHMARKS.md).

When more than ``population_shift_share`` of the eligible clients stand out on a statistic at once, the
shift is the population's (a staged rollout, a new app version): one ticket, and no page on that statistic.

On a sharded alerter's client shard (``population_from_totals``) the population is the model's rows summed
over every client (``ingest_population``), decayed alike, so a client is ranked against the whole population
as it would be unsharded; the shift share and the count in the evidence are its shard's.

>>> import numpy as np
>>> from monitor.contracts.sli import SliRows, histogram_columns
>>> from monitor.spec.rules import ClientRule
>>> rule = ClientRule(name="standout", statistics={"own_near_duplicate": {"min_effect": 0.7}}, min_queries=20)
>>> ev = ClientStandoutEvaluator(rule, bucket_s=60)
>>> def minute(b, client, n, dups):
...     flags = {"queries": np.ones(n, bool), "own_near_dup": np.arange(n) < dups, "traffic_events": np.ones(n, bool)}
...     return SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
...         client=np.array([client] * n, dtype=object), ts=np.full(n, b * 60.0), flags=flags, confidence=np.ones(n))
>>> alerts = []
>>> for b in range(30):
...     rows = [minute(b, f"k{i}", 10, 0) for i in range(20)] + ([minute(b, "probe", 10, 9)] if b >= 20 else [])
...     ev.ingest(SliRows.concat(rows)); alerts += ev.evaluate(end_bucket=b + 1)
>>> [(a.client_id, a.fired_at / 60, a.evidence["statistics"][0]["name"]) for a in alerts]
[('probe', 23.0, 'own_near_duplicate')]
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.alerting.hysteresis import cooled
from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.sli import SCORE_EDGES, SliRows, histogram_columns, summed_by, value_index
from monitor.spec.rules import ClientRule


@dataclass(frozen=True)
class _Statistic:
    """How to read one statistic's histogram from SLI row values, most suspicious bin last."""

    name: str
    reads: tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]  # SLI value columns; them -> (rows, bins)
    representative: np.ndarray  # a value per bin, for the evidence ("client 0.21 vs population 0.50")
    unit: str


def _histogram(kind: str, reverse: bool = False) -> tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]:
    columns = histogram_columns(kind)
    return tuple(range(columns.start, columns.stop)), (lambda read: read[:, ::-1]) if reverse else (lambda read: read)


def _flagged_share(flagged: str, total: str) -> tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]:
    def share(read: np.ndarray) -> np.ndarray:  # (total, flagged) -> (not flagged, flagged)
        return np.column_stack([np.maximum(read[:, 0] - read[:, 1], 0.0), read[:, 1]])

    return (value_index(total), value_index(flagged)), share


_EDGES = np.asarray(SCORE_EDGES)
STATISTICS: dict[str, _Statistic] = {
    "margin_rank": _Statistic("margin_rank", _histogram("margin_rank", reverse=True),
                              (np.arange(10)[::-1] + 0.5) / 10, "mean margin rank"),
    "input_score": _Statistic("input_score", _histogram("score"),
                              np.r_[_EDGES[0] - 0.25, (_EDGES[1:] + _EDGES[:-1]) / 2, _EDGES[-1] * 1.5],
                              "mean input score (1 = threshold)"),
    "private_near_duplicate": _Statistic("private_near_duplicate", _flagged_share("private_near_dup", "queries"),
                                         np.array([0.0, 1.0]),
                                         "share of queries near-duplicating its own and no other client's"),
    "own_near_duplicate": _Statistic("own_near_duplicate", _flagged_share("own_near_dup", "queries"),
                                     np.array([0.0, 1.0]), "share of queries near-duplicating its own"),
}


def _summed(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bucket's rows (the SLI counters the statistics read), however many messages and batches they came in, as
    one row per (model, client) in name order, before any statistic reads them: what a client adds to its window,
    and the order in which new clients get their rows, then do not depend on how its minute was split. Read part
    by part, a statistic that is not a sum of its parts moved (the share of queries that near-duplicate: a
    minute's queries come in the batch that read them, the matcher's corrections to them in the later one that
    matched them, and a part that read as nothing alone was dropped or clipped), and a client near the threshold
    paged or resolved minutes apart with the batch size.

    >>> m, c, b = _summed([(np.array(["m", "m"], dtype=object), np.array(["b", "a"], dtype=object), np.eye(2)),
    ...                    (np.array(["m"], dtype=object), np.array(["b"], dtype=object), np.ones((1, 2)))])
    >>> c.tolist(), b.tolist()
    (['a', 'b'], [[0.0, 1.0], [2.0, 1.0]])
    """
    models = np.concatenate([part[0] for part in parts])
    clients = np.concatenate([part[1] for part in parts])
    first, sums = summed_by(np.concatenate([part[2] for part in parts]), models, clients)
    return models[first], clients[first], sums


def rank_test(client: np.ndarray, population: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U of each row of ``client`` (histograms, most suspicious bin last) against the rest of
    ``population`` (their sum, client included): (AUC, z) per row, ties corrected.

    >>> c = np.array([[0.0, 0.0, 10.0], [3.0, 4.0, 3.0]])
    >>> auc, z = rank_test(c, c.sum(axis=0) + np.array([30.0, 40.0, 30.0]))
    >>> np.round(auc, 2).tolist(), bool(z[0] > 3 > abs(z[1]))
    ([0.85, 0.47], True)
    """
    others = np.maximum(population[None, :] - client, 0.0)  # population sums kept apart may round below
    n, m = client.sum(axis=1), others.sum(axis=1)
    below = np.cumsum(others, axis=1) - others
    u = (client * (below + 0.5 * others)).sum(axis=1)
    total = n + m
    ties = float((population ** 3 - population).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = n * m / 12.0 * ((total + 1) - ties / (total * (total - 1)))
        auc = u / (n * m)
        z = (u - n * m / 2.0) / np.sqrt(np.maximum(variance, 1e-12))
    return auc, z


@dataclass
class _Clients:
    """One model's clients: decayed histograms of every statistic, concatenated."""

    widths: list[int]
    rows: dict[str, int] = field(default_factory=dict)
    names: list[str | None] = field(default_factory=list)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    since: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first bucket of current activity
    head: int | None = None  # the bucket the sums are decayed to
    free: list[int] = field(default_factory=list)  # released rows, a heap: a new client takes the lowest

    def __post_init__(self) -> None:
        self.sums = np.zeros((0, sum(self.widths)))

    def row_of(self, clients: np.ndarray, bucket: int) -> np.ndarray:
        out = np.empty(len(clients), np.int64)
        for i, client in enumerate(clients.tolist()):
            row = self.rows.get(client)
            if row is None:
                row = self.rows[client] = heapq.heappop(self.free) if self.free else len(self.names)
                if row == len(self.names):
                    self.names.append(client)
                else:
                    self.names[row] = client
            out[i] = row
        if len(self.names) > len(self.sums):
            grown = np.zeros((2 * len(self.names), sum(self.widths)))
            grown[:len(self.sums)] = self.sums
            since = np.full(len(grown), bucket, np.int64)
            since[:len(self.since)] = self.since
            self.sums, self.since = grown, since
        return out

    def release(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            name = self.names[row]
            if name is not None:
                del self.rows[name]
                heapq.heappush(self.free, row)
            self.names[row] = None
        self.sums[rows] = 0.0


class ClientStandoutEvaluator:
    """Pages a client that stands out from the population; tickets a shift that many clients share."""

    def __init__(self, rule: ClientRule, bucket_s: int, population_from_totals: bool = False) -> None:
        self.rule = rule
        self.population_from_totals = population_from_totals
        self._pending_population: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._population: dict[str, _Clients] = {}  # model -> its sums over every client, as one row
        self.bucket_s = bucket_s
        self.statistics = [STATISTICS[name] for name in rule.statistics]
        # the SLI value columns the statistics read, side by side: what the pending rows keep of each row
        self._columns = np.array([c for s in self.statistics for c in s.reads[0]], np.int64)
        self._splits = np.cumsum([len(s.reads[0]) for s in self.statistics])[:-1]
        self.min_effect = np.array([rule.statistics[s.name].min_effect for s in self.statistics])
        self.z_threshold = rule.z_threshold(bucket_s)
        self.decay = 0.5 ** (bucket_s / rule.half_life)
        self._pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._models: dict[str, _Clients] = {}
        self._open: dict[tuple[str, str], Alert] = {}
        self._last_hot: dict[tuple[str, str], float] = {}
        self._evaluations = 0
        self.reads_totals = False
        # Older rows weigh under 2**-12 in the decayed windows; an open alert resolves after resolve_after.
        self.client_history_s = 12.0 * rule.half_life + rule.resolve_after

    @property
    def live_clients(self) -> int:
        """Clients holding a window now (a client idle for long is released)."""
        return sum(len(clients.rows) for clients in self._models.values())

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the clients' windows: the histogram rows and the key tables."""
        return sum(c.sums.nbytes + c.since.nbytes + sys.getsizeof(c.rows) + sys.getsizeof(c.names)
                   + sum(sys.getsizeof(name) for name in c.rows) for c in self._models.values())

    @property
    def firing(self) -> list[Alert]:
        return list(self._open.values())

    def ingest(self, rows: SliRows) -> None:
        if not len(rows):
            return
        buckets = rows.bucket // self.bucket_s  # every row: one that reads as nothing alone may correct another
        for bucket in np.unique(buckets).tolist():
            mine = buckets == bucket
            self._pending.setdefault(bucket, []).append((rows.model[mine], rows.client[mine],
                                                         rows.values[mine][:, self._columns]))

    def ingest_population(self, rows: SliRows) -> None:
        """Rows summed over every client of a model (client ``""``): the population, where clients are sharded."""
        if not self.population_from_totals or not len(rows):
            return
        for bucket in np.unique(rows.bucket // self.bucket_s).tolist():
            mine = rows.bucket // self.bucket_s == bucket
            self._pending_population.setdefault(bucket, []).append((rows.model[mine],
                                                                    rows.values[mine][:, self._columns]))

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        """Fold the buckets before ``end_bucket`` into the windows, then test every model's clients."""
        for bucket in sorted(b for b in self._pending if b < end_bucket):
            models, clients, values = _summed(self._pending.pop(bucket))
            self._add(bucket, models, clients, self._blocks(values))
        for bucket in sorted(b for b in self._pending_population if b < end_bucket):
            parts = [(models, np.full(len(models), "", object), values)
                     for models, values in self._pending_population.pop(bucket)]
            models, clients, values = _summed(parts)
            self._add(bucket, models, clients, self._blocks(values), self._population)
        now = float(end_bucket * self.bucket_s)
        alerts: list[Alert] = []
        hot: set[tuple[str, str]] = set()
        for population in self._population.values():
            self._decay_to(population, end_bucket - 1)
        for model, state in self._models.items():
            self._decay_to(state, end_bucket - 1)
            alerts += self._test(model, state, now, hot, samples)
        alerts += self._resolve_cooled(hot, now)
        self._evaluations += 1
        if self._evaluations % 60 == 0:
            self._release_idle()
        return alerts

    def _blocks(self, values: np.ndarray) -> np.ndarray:
        """Every statistic's histogram, side by side, of rows of the value columns they read (``_columns``)."""
        parts = np.split(values, self._splits, axis=1)
        return np.column_stack([s.reads[1](read) for s, read in zip(self.statistics, parts, strict=True)])

    def _add(self, bucket: int, models: np.ndarray, clients: np.ndarray, blocks: np.ndarray,
             into: dict[str, _Clients] | None = None) -> None:
        into = self._models if into is None else into
        for model in np.unique(models.astype(str)).tolist():
            mine = models == model
            state = into.setdefault(model, _Clients([len(s.representative) for s in self.statistics]))
            rows = state.row_of(clients[mine], bucket)
            idle = state.sums[rows].sum(axis=1) < 1.0
            state.since[rows[idle]] = bucket  # a client back from idle starts a new stretch of activity
            self._decay_to(state, bucket)
            assert state.head is not None
            np.add.at(state.sums, rows, blocks[mine] * self.decay ** max(0, state.head - bucket))

    def _decay_to(self, state: _Clients, bucket: int) -> None:
        if state.head is None or bucket > state.head:
            if state.head is not None:
                state.sums *= self.decay ** (bucket - state.head)
            state.head = bucket

    def _test(self, model: str, state: _Clients, now: float, hot: set[tuple[str, str]],
              samples: EvidenceSamples | None) -> list[Alert]:
        live = np.flatnonzero(np.array([n is not None for n in state.names], bool))
        whole = self._population.get(model)
        if len(live) < (1 if self.population_from_totals else 3) or (self.population_from_totals and whole is None):
            return []
        start = 0
        standing: list[np.ndarray] = []
        readings: list[dict[str, np.ndarray]] = []
        for statistic, width, effect in zip(self.statistics, state.widths, self.min_effect, strict=True):
            block = state.sums[live, start:start + width]
            everyone = block.sum(axis=0) if whole is None else whole.sums[0, start:start + width]
            start += width
            n = block.sum(axis=1)
            eligible = n >= self.rule.min_queries
            auc, z = rank_test(block, everyone)
            out = eligible & (z >= self.z_threshold) & (auc >= effect)
            if eligible.sum() >= 10 and out.sum() > self.rule.population_shift_share * eligible.sum():
                out[:] = False  # a shift the population shares: drift, not an attack (see the drift rules)
            with np.errstate(invalid="ignore", divide="ignore"):
                value = (block * statistic.representative).sum(axis=1) / n
                others = np.maximum(everyone[None, :] - block, 0.0)
                population = (others * statistic.representative).sum(axis=1) / others.sum(axis=1)
            standing.append(out)
            readings.append({"auc": auc, "z": z, "n": n, "value": value, "population": population})
        alerts = []
        for i in np.flatnonzero(np.logical_or.reduce(standing)).tolist():
            key = (model, str(state.names[live[i]]))
            hot.add(key)
            self._last_hot[key] = now
            if key not in self._open:
                evidence = [self._reading(s, r, i)
                            for s, out, r in zip(self.statistics, standing, readings, strict=True) if out[i]]
                alerts.append(self._fire(key, evidence, float(state.since[live[i]] * self.bucket_s), now,
                                         int(len(live)), samples))
        return alerts

    @staticmethod
    def _reading(statistic: _Statistic, reading: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        return {"name": statistic.name, "measure": statistic.unit, "client": round(float(reading["value"][i]), 4),
                "population": round(float(reading["population"][i]), 4), "auc": round(float(reading["auc"][i]), 4),
                "z": round(float(reading["z"][i]), 2), "queries": round(float(reading["n"][i]), 1)}

    def _fire(self, key: tuple[str, str], evidence: list[dict[str, Any]], since: float, now: float, clients: int,
              samples: EvidenceSamples | None) -> Alert:
        model, client = key
        event_ids, fingerprints = samples.samples(model, client) if samples else ([], [])
        what = "; ".join(f"{e['measure']} {e['client']:.3g} vs {e['population']:.3g} (AUC {e['auc']:.2f}, "
                         f"z {e['z']:.1f}, {e['queries']:.0f} queries)" for e in evidence)
        alert = Alert.firing(
            rule=f"{self.rule.name}/{self.rule.severity}", slo=self.rule.name, severity=self.rule.severity,
            model=model, client_id=client, sli=",".join(e["name"] for e in evidence), first_event_ts=since,
            fired_at=now, fingerprints=fingerprints, sample_event_ids=event_ids,
            evidence={"statistics": evidence, "population_clients": clients,
                      "z_threshold": round(self.z_threshold, 2)},
            summary=f"{self.rule.headline(model, client)}: client {client} of model {model} stands out from "
                    f"{clients} clients in the same minutes: {what}",
            runbook_url=self.rule.runbook, rule_labels=self.rule.labels)
        self._open[key] = alert
        return alert

    def _resolve_cooled(self, hot: set[tuple[str, str]], now: float) -> list[Alert]:
        return [alert.resolve(at=now, summary=f"resolved: {alert.summary}")
                for _, alert in cooled(self._open, self._last_hot, hot, now, self.rule.resolve_after)]

    def _release_idle(self) -> None:
        """Clients quiet for many half-lives and without an open alert give their row back."""
        for model, state in self._models.items():
            idle = [row for name, row in state.rows.items()
                    if state.sums[row].sum() < 1e-3 and (model, name) not in self._open]
            if idle:
                state.release(np.asarray(idle, np.int64))
