"""Groups of clients whose queries chain to each other's: a black-box attack spread over many API keys
(Sybil), named in one alert with all its keys.

Each closed bucket adds, per model, every client's fresh queries and cross-client near-duplicates (from the
SLI rows) and the match edges between clients (which client's query matched which other client's), all
decayed with ``half_life``. A client is a candidate when most of its queries (``min_cross_share`` of at
least ``min_queries``) near-duplicate another client's; candidates linked by ``min_matches`` or more form
groups (connected components); a group of ``min_keys`` or more fires once and stays one alert while any
of its keys keeps qualifying. Popular content gives many benign clients a few cross matches each, but it
is a small share of what they send; a Sybil attacker's keys send little else.

>>> import numpy as np
>>> from monitor.contracts.edges import MatchEdges
>>> from monitor.contracts.sli import SliRows
>>> from monitor.spec.rules import GroupRule
>>> ev = GroupEvaluator(GroupRule(name="sybil", min_keys=4, min_fresh_share=0), bucket_s=60)
>>> keys = [f"s{i}" for i in range(6)]
>>> def minute(b):
...     n = 6 * 4; clients = np.repeat(keys, 4).astype(object)
...     flags = {"queries": np.ones(n, bool), "cross_near_dup": np.ones(n, bool), "traffic_events": np.ones(n, bool)}
...     rows = SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
...         client=clients, ts=np.full(n, b * 60.0), flags=flags, confidence=np.ones(n))
...     others = np.roll(clients, 4)   # each key's probes match the previous key's
...     return rows, MatchEdges.from_events(np.full(n, b * 60), np.array(["m"] * n, dtype=object), clients, others)
>>> alerts = []
>>> for b in range(5):
...     rows, edges = minute(b); ev.ingest(rows); ev.ingest_edges(edges); alerts += ev.evaluate(end_bucket=b + 1)
>>> [(a.status, a.evidence["keys"]) for a in alerts]
[('firing', ['s0', 's1', 's2', 's3', 's4', 's5'])]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.alerting.hysteresis import cooled
from monitor.alerting.samples import EvidenceSamples
from monitor.contracts.alerts import Alert
from monitor.contracts.edges import MatchEdges
from monitor.contracts.sli import SliRows, value_index
from monitor.spec.rules import GroupRule

MAX_LISTED = 50  # keys listed in the summary; the evidence lists them all
FORGET_S = 86400  # a key silent this long counts as new when it returns
UPDATE_EVERY_S = 300  # a growing group's alert names its new keys at most this often (unless it grew by half)


@dataclass
class _ModelGraph:
    """Decayed per-client counts and edge weights of one model."""

    forget_buckets: int
    queries: dict[str, float] = field(default_factory=dict)
    cross: dict[str, float] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)  # first bucket of each client's current activity
    first_seen: dict[str, int] = field(default_factory=dict)  # first bucket ever (until idle for a day)
    last_seen: dict[str, int] = field(default_factory=dict)
    edges: dict[tuple[str, str], float] = field(default_factory=dict)
    head: int | None = None

    def decay_to(self, bucket: int, factor: float) -> None:
        if self.head is not None and bucket > self.head:
            scale = factor ** (bucket - self.head)
            for table in (self.queries, self.cross, self.edges):
                for key in list(table):
                    table[key] *= scale  # type: ignore[index]
                    if table[key] < 1e-3:  # type: ignore[index]
                        del table[key]  # type: ignore[arg-type]
            for client in [c for c in self.since if c not in self.queries]:
                del self.since[client]
            forgotten = [c for c, seen in self.last_seen.items() if bucket - seen > self.forget_buckets]
            for client in forgotten:
                del self.last_seen[client]
                self.first_seen.pop(client, None)
        if self.head is None or bucket > self.head:
            self.head = bucket


def _linked(graph: _ModelGraph, members: set[str], group: set[str]) -> bool:
    """Whether any match (of any weight) links two sets of keys: parts of one attack found apart."""
    return any((a in members and b in group) or (b in members and a in group) for a, b in graph.edges)


class GroupEvaluator:
    def __init__(self, rule: GroupRule, bucket_s: int) -> None:
        self.rule = rule
        self.bucket_s = bucket_s
        self.decay = 0.5 ** (bucket_s / rule.half_life)
        self._pending_rows: dict[int, list[SliRows]] = {}
        self._pending_edges: dict[int, list[MatchEdges]] = {}
        self._models: dict[str, _ModelGraph] = {}
        self._open: dict[str, Alert] = {}  # dedup key -> the group's firing alert
        self._members: dict[str, tuple[str, set[str]]] = {}  # dedup key -> (model, every key found in it)
        self._named: dict[str, tuple[int, float]] = {}  # dedup key -> (keys its last transition named, when)
        self._last_hot: dict[str, float] = {}
        self._started: int | None = None  # the first bucket this evaluator saw
        self.reads_totals = False
        self.client_history_s = 12.0 * rule.half_life + max(rule.resolve_after, rule.fresh_within)

    @property
    def firing(self) -> list[Alert]:
        return list(self._open.values())

    def ingest(self, rows: SliRows) -> None:
        keep = (rows.column("queries") != 0) | (rows.column("cross_near_dup") != 0)  # matcher rows: changes only
        if keep.any():
            mine = rows.take(keep)
            for bucket in np.unique(mine.bucket // self.bucket_s).tolist():
                self._pending_rows.setdefault(bucket, []).append(mine.take(mine.bucket // self.bucket_s == bucket))

    def ingest_edges(self, edges: MatchEdges) -> None:
        for bucket in np.unique(edges.bucket // self.bucket_s).tolist():
            self._pending_edges.setdefault(bucket, []).append(edges.take(edges.bucket // self.bucket_s == bucket))

    def evaluate(self, end_bucket: int, samples: EvidenceSamples | None = None) -> list[Alert]:
        for bucket in sorted(b for b in {*self._pending_rows, *self._pending_edges} if b < end_bucket):
            self._add(bucket, self._pending_rows.pop(bucket, []), self._pending_edges.pop(bucket, []))
        now = float(end_bucket * self.bucket_s)
        alerts: list[Alert] = []
        hot: set[str] = set()
        for model, graph in self._models.items():
            graph.decay_to(end_bucket - 1, self.decay)
            alerts += self._note(model, self._groups(graph), graph, now, hot, samples)
        for key, alert in cooled(self._open, self._last_hot, hot, now, self.rule.resolve_after):
            members = sorted(self._members.pop(key)[1])
            del self._named[key]
            alerts.append(alert.resolve(at=now, summary=f"resolved: {alert.summary} (all {len(members)} keys "
                                                        f"found in it: {', '.join(members)})"))
        return alerts

    def _add(self, bucket: int, rows: list[SliRows], edges: list[MatchEdges]) -> None:
        for table in rows:
            queries, cross = table.column("queries"), table.values[:, value_index("cross_near_dup")]
            for model, client, q, x in zip(table.model.tolist(), table.client.tolist(), queries.tolist(),
                                           cross.tolist(), strict=True):
                graph = self._graph(model)
                graph.decay_to(bucket, self.decay)
                if client not in graph.since:
                    graph.since[client] = bucket
                graph.first_seen.setdefault(client, bucket)
                graph.last_seen[client] = bucket
                self._started = bucket if self._started is None else min(self._started, bucket)
                graph.queries[client] = graph.queries.get(client, 0.0) + q
                graph.cross[client] = graph.cross.get(client, 0.0) + x
        for links in edges:
            for model, a, b, n in zip(links.model.tolist(), links.client.tolist(), links.other.tolist(),
                                      links.count.tolist(), strict=True):
                graph = self._graph(model)
                graph.decay_to(bucket, self.decay)
                pair = (a, b) if a < b else (b, a)
                graph.edges[pair] = graph.edges.get(pair, 0.0) + n

    def _graph(self, model: str) -> _ModelGraph:
        if model not in self._models:
            self._models[model] = _ModelGraph(FORGET_S // self.bucket_s)
        return self._models[model]

    def _fresh(self, graph: _ModelGraph, members: set[str]) -> float:
        """Share of the keys first seen within ``fresh_within``. At start-up every key is new to the evaluator, so
        a key first seen in its first ``fresh_within`` is of unknown age and never counts as fresh."""
        if graph.head is None or self._started is None:
            return 0.0
        window = self.rule.fresh_within // self.bucket_s
        head, started = graph.head, self._started
        return sum(head - window <= graph.first_seen.get(c, -1) and graph.first_seen[c] - started >= window
                   for c in members) / len(members)

    def _groups(self, graph: _ModelGraph) -> list[set[str]]:
        """Connected components of candidates linked by strong enough edges, of ``min_keys`` or more keys,
        enough of them fresh."""
        r = self.rule
        candidates = [c for c, q in graph.queries.items()
                      if q >= r.min_queries and graph.cross.get(c, 0.0) >= r.min_cross_share * q]
        parent = {c: c for c in candidates}

        def root(c: str) -> str:
            while parent[c] != c:
                parent[c] = parent[parent[c]]
                c = parent[c]
            return c

        for (a, b), weight in graph.edges.items():
            if weight >= r.min_matches and a in parent and b in parent:
                parent[root(a)] = root(b)
        components: dict[str, set[str]] = {}
        for c in candidates:
            components.setdefault(root(c), set()).add(c)
        groups = [g for g in components.values() if len(g) >= r.min_keys and self._fresh(graph, g) >= r.min_fresh_share]
        return sorted(groups, key=lambda g: (-len(g), min(g)))  # the largest first, the same order every run

    def _note(self, model: str, groups: list[set[str]], graph: _ModelGraph, now: float, hot: set[str],
              samples: EvidenceSamples | None) -> list[Alert]:
        """Fold this evaluation's groups into the open alerts they overlap or link to (new groups linked to each
        other become one), then emit at most one transition per alert: a new group fires; an open one that has
        gained keys is updated to name them all, at once if it grew by half, else at most every UPDATE_EVERY_S."""
        staged: dict[str, set[str]] = {}  # alert key (or a new group's first key) -> keys this evaluation
        for group in groups:
            known = {k: m for k, (mine, m) in self._members.items() if mine == model}
            home = next((k for k, m in {**known, **staged}.items() if m & group or _linked(graph, m, group)), None)
            key = home if home is not None else f"new:{min(group)}"
            staged[key] = staged.get(key, set()) | group
        alerts = []
        for key, group in staged.items():
            if key in self._open:
                hot.add(key)
                self._last_hot[key] = now
                members = self._members[key][1] | group
                self._members[key] = (model, members)
                named, at = self._named[key]
                if len(members) > named and (len(members) >= 1.5 * named or now - at >= UPDATE_EVERY_S):
                    self._open[key] = alert = self._alert(model, members, graph, now, samples, self._open[key])
                    self._named[key] = (len(members), now)
                    alerts.append(alert)
                continue
            alert = self._alert(model, group, graph, now, samples, None)
            self._open[alert.dedup_key] = alert
            self._members[alert.dedup_key] = (model, set(group))
            self._named[alert.dedup_key] = (len(group), now)
            hot.add(alert.dedup_key)
            self._last_hot[alert.dedup_key] = now
            alerts.append(alert)
        return alerts

    def _alert(self, model: str, group: set[str], graph: _ModelGraph, now: float, samples: EvidenceSamples | None,
               previous: Alert | None) -> Alert:
        members = sorted(group)
        active = [c for c in members if c in graph.queries]
        queries = sum(graph.queries[c] for c in active)
        share = sum(graph.cross.get(c, 0.0) for c in active) / max(queries, 1e-9)
        population = [c for c in graph.queries if c not in group]
        pop_queries = sum(graph.queries[c] for c in population)
        pop_share = sum(graph.cross.get(c, 0.0) for c in population) / max(pop_queries, 1e-9)
        event_ids: list[str] = []
        fingerprints: list[str] = []
        if samples:
            for client in members[:5]:
                ids, prints = samples.samples(model, client)
                event_ids, fingerprints = event_ids + ids[:1], fingerprints + prints[:1]
        listed = ", ".join(members[:MAX_LISTED]) + (f" and {len(members) - MAX_LISTED} more"
                                                     if len(members) > MAX_LISTED else "")
        evidence = {"keys": members, "queries": round(queries, 1), "cross_share": round(share, 4),
                    "fresh_share": round(self._fresh(graph, group), 4),
                    "population_cross_share": round(pop_share, 4), "population_clients": len(population)}
        summary = (f"{self.rule.headline(model)}: {len(members)} keys of model {model} whose queries "
                   f"chain to each other's ({share:.0%} of their {queries:.0f} recent queries near-duplicate "
                   f"another key's, vs {pop_share:.1%} for the other {len(population)} clients): {listed}")
        if previous is not None:
            return previous.updated(now, evidence=evidence, summary=summary, fingerprints=fingerprints,
                                    sample_event_ids=event_ids)
        return Alert.firing(
            subject=f"group:{members[0]}", rule=f"{self.rule.name}/{self.rule.severity}", slo=self.rule.name,
            severity=self.rule.severity, model=model, client_id=None, sli="cross_near_duplicate_rate",
            first_event_ts=float(min(graph.since.get(c, graph.head or 0) for c in members) * self.bucket_s),
            fired_at=now, fingerprints=fingerprints, sample_event_ids=event_ids, evidence=evidence, summary=summary,
            runbook_url=self.rule.runbook, rule_labels=self.rule.labels)
