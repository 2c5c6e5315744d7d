"""The SLO evaluator's per-key memory."""


from monitor.contracts.sli import SliRows
from monitor.spec.rules import load_rules_text
from tests.alerting.test_alerter import minute


def test_per_client_windows_release_keys_idle_for_the_whole_horizon():
    from monitor.alerting.slo import SloEvaluator

    slo = load_rules_text("slos: [{name: a, sli: input_anomaly_rate, scope: client, objective: 0.99, "
                          "min_events: 10, severities: [page]}]").slos[0]
    evaluator = SloEvaluator(slo, bucket_s=60)
    horizon = evaluator.windows.length
    attacker_alerts = []
    for b in range(3 * horizon):
        clients = [f"k{b}-{i}" for i in range(5)] + ["attacker"]  # five new keys a minute, one that stays
        rows = SliRows.concat([minute(b, 20 if c == "attacker" else 0, total=20, client=c) for c in clients])
        evaluator.ingest(rows)
        attacker_alerts += [a for a in evaluator.evaluate(end_bucket=b + 1) if a.client_id == "attacker"]
    assert evaluator.windows.live_keys <= 5 * (horizon + 61) + 1  # not 5 x 3 x horizon
    assert len(evaluator.windows) <= 5 * (horizon + 61) + 1  # released rows are reused: the arrays stop growing
    assert [a.status for a in attacker_alerts] == ["firing"]  # the busy key keeps its row and its open alert
