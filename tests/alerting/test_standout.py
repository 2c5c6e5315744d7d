"""Each client against the population, end to end on generated traffic (a scenario family this project's demo
did not write): a change every client shares tickets and pages nobody; the same change with one attacker
pages that attacker, and only that one."""

import numpy as np
import pytest

from monitor.alerting.standout import ClientStandoutEvaluator, rank_test
from monitor.contracts.sli import SliRows, value_index
from monitor.sim.evaluation import reference_profile, replay
from monitor.sim.families import FAMILIES, Attack, Change, generate
from monitor.spec.rules import ClientRule, default_rules_dir, load_rules

CHANGE = Change("noise", start_h=1.5, ramp_h=1.0, strength=0.04)  # every client's sensor gets noisier
PGD = Attack("pgd-0.10", "pgd", start_h=3.0, eps=0.10, rate=0.5, sources=400)


def day(attacks=()):
    family = FAMILIES["digits-window-ref"].scaled(hours=4.0, window_h=1.0, change=CHANGE, attacks=attacks)
    generated = generate(family)
    return generated, replay(generated, reference_profile(generated), load_rules(default_rules_dir()))


@pytest.fixture(scope="module")
def change_only():
    return day()


@pytest.fixture(scope="module")
def change_and_attacker():
    return day(attacks=(PGD,))


@pytest.mark.integration
def test_a_change_every_client_shares_tickets_and_pages_nobody(change_only):
    generated, replayed = change_only
    fired = [a for a in replayed.alerts if a.status == "firing"]
    assert not [a for a in fired if a.severity == "page"], [a.summary for a in fired if a.severity == "page"]
    start = generated.start_ts + CHANGE.start_h * 3600
    tickets = [a for a in fired if a.severity == "ticket" and a.fired_at >= start]
    assert len(tickets) == 1, [a.summary for a in fired]  # one ticket for one change
    assert tickets[0].evidence["clients_moved"] >= 0.25 * tickets[0].evidence["clients"]  # shared, not one client's
    assert not [a for a in fired if a.severity == "ticket" and a.fired_at < start]  # quiet before it


@pytest.mark.integration
def test_the_same_change_with_one_attacker_pages_the_attacker_only(change_and_attacker):
    generated, replayed = change_and_attacker
    [attacker] = generated.truth["pgd-0.10"]["keys"]
    fired = [a for a in replayed.alerts if a.status == "firing"]
    pages = [a for a in fired if a.severity == "page"]
    assert [a.client_id for a in pages] == [attacker], [a.summary for a in pages]
    assert [a.slo for a in fired if a.severity == "ticket"].count("confidence-drift") <= 1
    [page] = pages
    delay = page.fired_at - generated.truth["pgd-0.10"]["start"]
    # within five minutes of event time, in this draw of the reference fit (reference_profile's draw 0): in six other
    # draws this attacker was paged after 57-777 s, and once not at all (README, "How much of each figure is the
    # draw"). A change to how profiles are fitted moves this delay by the draw alone: read the draws before.
    assert delay <= 300, delay
    names = {s["name"] for s in page.evidence["statistics"]}
    assert names and all(s["z"] >= page.evidence["z_threshold"] for s in page.evidence["statistics"])
    assert "stands out from" in page.summary and any(n in page.summary for n in ("margin", "input score")), names


@pytest.mark.integration
def test_the_same_day_in_batches_of_any_size_gives_the_same_alerts(change_and_attacker):
    """Margin ranks against the minutes that ended 10 minutes before, and each client's minute summed before it is
    read: replay's transitions and ranks do not move with the batch size (ranks within float rounding)."""
    generated, replayed = change_and_attacker
    small = replay(generated, reference_profile(generated), load_rules(default_rules_dir()), batch_size=300)
    def transitions(alerts):
        return [(a.alert_id, a.status, a.fired_at, a.resolved_at) for a in alerts]
    assert any(a.severity == "page" for a in replayed.alerts)
    assert transitions(small.alerts) == transitions(replayed.alerts)
    np.testing.assert_allclose(small.signals["margin_rank"], replayed.signals["margin_rank"], rtol=0, atol=1e-12)


def test_rank_test_matches_scipy_mann_whitney():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 80), rng.integers(2, 10, 500)
    client = np.bincount(a, minlength=10).astype(float)
    population = client + np.bincount(b, minlength=10)
    auc, z = rank_test(client[None, :], population)
    u = mannwhitneyu(a, b, method="asymptotic", use_continuity=False)
    assert auc[0] == pytest.approx(u.statistic / (len(a) * len(b)))
    assert z[0] == pytest.approx(-abs(_z_of(u.pvalue)) if u.statistic < len(a) * len(b) / 2 else abs(_z_of(u.pvalue)),
                                 rel=1e-6)


def _z_of(two_sided_p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - two_sided_p / 2)


def test_many_clients_standing_out_at_once_is_a_shift_not_pages():
    rule = ClientRule(name="s", statistics={"own_near_duplicate": {"min_effect": 0.6}}, min_queries=10,
                      population_shift_share=0.2)
    evaluator = ClientStandoutEvaluator(rule, bucket_s=60)
    alerts = []
    for b in range(20):
        rows = []
        for i in range(30):  # from minute 10, a third of the clients (a staged rollout) repeat themselves
            n, dups = 10, (9 if b >= 10 and i < 10 else 0)
            flags = {"queries": np.ones(n, bool), "own_near_dup": np.arange(n) < dups,
                     "traffic_events": np.ones(n, bool)}
            rows.append(SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
                                             client=np.array([f"k{i}"] * n, dtype=object), ts=np.full(n, b * 60.0),
                                             flags=flags, confidence=np.ones(n)))
        evaluator.ingest(SliRows.concat(rows))
        alerts += evaluator.evaluate(end_bucket=b + 1)
    assert alerts == []


def test_memory_grows_with_clients_and_is_counted_per_client():
    evaluator = ClientStandoutEvaluator(ClientRule(name="s"), bucket_s=60)
    assert evaluator.live_clients == 0 and evaluator.memory_bytes == 0
    sizes = []
    for clients in (10, 200):
        n = 4 * clients
        flags = {"queries": np.ones(n, bool), "traffic_events": np.ones(n, bool)}
        evaluator.ingest(SliRows.from_columns(bucket=np.zeros(n, np.int64), model=np.array(["m"] * n, dtype=object),
                                              client=np.array([f"k{i % clients}" for i in range(n)], dtype=object),
                                              ts=np.zeros(n), flags=flags, confidence=np.ones(n)))
        evaluator.evaluate(end_bucket=1)
        sizes.append((evaluator.live_clients, evaluator.memory_bytes))
    (few, few_bytes), (many, many_bytes) = sizes
    assert (few, many) == (10, 200) and many_bytes > 10 * few_bytes / 2


def test_a_clients_minute_in_parts_weighs_as_the_whole_minute():
    """A client's minute comes in several messages: the batches that read its queries, and a later one whose
    corrections read as nothing alone (here a query taken back). Whole or in parts, every window and every alert
    is the same: the parts are summed per minute before any statistic reads them."""
    rule = ClientRule(name="s", statistics={"private_near_duplicate": {"min_effect": 0.6}}, min_queries=10)
    whole, parts = ClientStandoutEvaluator(rule, bucket_s=60), ClientStandoutEvaluator(rule, bucket_s=60)
    rng = np.random.default_rng(0)
    alerts = {"whole": [], "parts": []}
    for b in range(30):
        rows = []
        for i in range(40):  # from minute 10, client k0 repeats its own queries; the others now and then
            n = int(rng.integers(8, 14))
            dups = n - 1 if b >= 10 and i == 0 else int(rng.random() < 0.2)
            flags = {"queries": np.ones(n, bool), "private_near_dup": np.arange(n) < dups,
                     "traffic_events": np.ones(n, bool)}
            rows.append(SliRows.from_columns(bucket=np.full(n, b * 60), model=np.array(["m"] * n, dtype=object),
                                             client=np.array([f"k{i}"] * n, dtype=object), ts=np.full(n, b * 60.0),
                                             flags=flags, confidence=np.ones(n)))
        minute = SliRows.concat(rows).combined()
        first = SliRows(minute.bucket, minute.model, minute.client, minute.values.copy(), minute.first)
        correction = SliRows(minute.bucket, minute.model, minute.client, np.zeros_like(minute.values), minute.first)
        column = value_index("queries")
        first.values[:, column] += 1  # one query too many in the batch that read them,
        correction.values[:, column] = -1  # taken back by a later message: nothing but a negative count
        order = rng.permutation(len(minute))
        whole.ingest(minute)
        parts.ingest(correction.take(order[::2]))
        parts.ingest(first)
        parts.ingest(correction.take(order[1::2]))
        alerts["whole"] += whole.evaluate(end_bucket=b + 1)
        alerts["parts"] += parts.evaluate(end_bucket=b + 1)
    assert [a.client_id for a in alerts["whole"] if a.status == "firing"] == ["k0"]
    assert [(a.client_id, a.status, a.fired_at) for a in alerts["parts"]] == \
        [(a.client_id, a.status, a.fired_at) for a in alerts["whole"]]
    a, b = whole._models["m"], parts._models["m"]
    for name, row in a.rows.items():
        np.testing.assert_array_equal(a.sums[row], b.sums[b.rows[name]])
