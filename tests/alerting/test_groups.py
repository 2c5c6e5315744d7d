"""Sybil groups: a black-box attack spread round-robin over 30 new keys is one alert naming the keys, and
reaches a receiver as at most 3 page notifications; established clients that share popular content do not
form a group."""

import numpy as np
import pytest

from monitor.alerting.groups import GroupEvaluator
from monitor.contracts.edges import MatchEdges
from monitor.contracts.sli import SliRows
from monitor.sim.evaluation import reference_profile, replay
from monitor.sim.families import FAMILIES, Attack, generate
from monitor.spec.rules import GroupRule, default_rules_dir, load_rules

SPREAD = Attack("hopskipjump-spread", "hopskipjump", start_h=2.0, keys=30, rate=4.0, sources=2)


class Collect:
    name = "stdout"

    def __init__(self):
        self.notifications = []

    def send(self, notification):
        self.notifications.append(notification)


@pytest.mark.integration
def test_an_attack_over_thirty_keys_is_one_alert_naming_them_and_few_page_notifications():
    family = FAMILIES["digits-window-ref"].scaled(hours=3.0, window_h=1.0, attacks=(SPREAD,))
    generated = generate(family)
    sink = Collect()
    replayed = replay(generated, reference_profile(generated), load_rules(default_rules_dir()), sinks=[sink])
    keys = set(generated.truth["hopskipjump-spread"]["keys"])
    groups = [a for a in replayed.alerts if a.status == "firing" and a.slo == "sybil-group"]
    assert len({a.dedup_key for a in groups}) == 1, [a.summary for a in groups]  # one incident, updated as it grows
    named = set(groups[-1].evidence["keys"])
    assert named <= keys and len(named) >= 25, (len(named), sorted(keys - named))
    assert groups[0].fired_at - generated.truth["hopskipjump-spread"]["start"] <= 300
    pages = [n for n in sink.notifications if any(a.severity == "page" for a in n.alerts)]
    assert 1 <= len(pages) <= 3, [(n.group_labels, len(n.alerts), n.truncated) for n in pages]
    other = [a for a in replayed.alerts if a.status == "firing" and a.severity == "page"
             and not ({a.client_id} | set(a.evidence.get("keys", ()))) & keys]
    assert not other, [a.summary for a in other]  # no benign client paged


def rows_and_edges(bucket: int, clients: list[str], queries: int, cross: int, others: list[str]):
    n = len(clients) * queries
    client_column = np.repeat(clients, queries).astype(object)
    flags = {"queries": np.ones(n, bool), "traffic_events": np.ones(n, bool),
             "cross_near_dup": np.tile(np.arange(queries) < cross, len(clients))}
    rows = SliRows.from_columns(bucket=np.full(n, bucket * 60), model=np.array(["m"] * n, dtype=object),
                                client=client_column, ts=np.full(n, bucket * 60.0), flags=flags, confidence=np.ones(n))
    matched = np.where(flags["cross_near_dup"], np.repeat(others, queries), "").astype(object)
    return rows, MatchEdges.from_events(np.full(n, bucket * 60), np.array(["m"] * n, dtype=object), client_column,
                                        matched)


def test_keys_already_active_at_start_up_are_not_new_after_the_warm_up():
    """A cold start sees every key for the first time: those active in its first hour are of unknown age, so their
    chaining through popular content does not page when the warm-up ends (it did, at minute 61, before)."""
    evaluator = GroupEvaluator(GroupRule(name="g", min_keys=5, fresh_within=3600), bucket_s=60)
    keys = [f"k{i}" for i in range(10)]
    alerts = []
    for b in range(150):
        rows, edges = rows_and_edges(b, keys, 4, 3, keys[1:] + keys[:1])
        evaluator.ingest(rows)
        evaluator.ingest_edges(edges)
        alerts += evaluator.evaluate(end_bucket=b + 1)
    assert alerts == []


def test_established_clients_chaining_through_popular_content_are_not_a_group():
    """The same chaining from keys that have been around for hours is not a Sybil group; from new keys it is."""
    evaluator = GroupEvaluator(GroupRule(name="g", min_keys=5, fresh_within=3600), bucket_s=60)
    old = [f"old{i}" for i in range(8)]
    new = [f"new{i}" for i in range(8)]
    alerts = []
    for b in range(180):
        chained = b >= 120  # both sets chain to each other from minute 120; the new keys appear only then
        rows, edges = rows_and_edges(b, old, 4, 3 if chained else 0, old[1:] + old[:1])
        evaluator.ingest(rows)
        evaluator.ingest_edges(edges)
        if chained:
            rows, edges = rows_and_edges(b, new, 4, 3, new[1:] + new[:1])
            evaluator.ingest(rows)
            evaluator.ingest_edges(edges)
        alerts += evaluator.evaluate(end_bucket=b + 1)
    assert [sorted(a.evidence["keys"]) for a in alerts if a.status == "firing"] == [sorted(new)]
