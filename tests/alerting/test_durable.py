"""The alerter's durable state: redelivery and crashes at any write neither lose nor invent alerts."""

import base64
import dataclasses

import numpy as np
import pytest

from monitor.alerting.durable import DurableAlerter
from monitor.alerting.state import AlerterState
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.spec.rules import load_rules_text

RULES = load_rules_text("""
slos:
  - {name: anomaly, sli: input_anomaly_rate, objective: 0.99, min_events: 20, scope: client, severities: [page]}
  - {name: anomaly-model, sli: input_anomaly_rate, objective: 0.999, min_events: 20}
drift:
  - {name: drift, detector: page_hinkley, series: clean_confidence_mean, delta: 0.005, threshold: 0.2}
""")


def stream(seed=0, minutes=240):
    """Per-minute batches from two ingest instances: three clients, an attack burst, a confidence drop."""
    rng = np.random.default_rng(seed)
    batches = []
    for minute in range(minutes):
        for instance in ("ingest-0", "ingest-1"):
            n = 60
            ts = minute * 60 + np.sort(rng.uniform(0, 60, n))
            client = rng.choice(np.array(["a", "b", "attacker"], dtype=object), n)
            attack = (client == "attacker") & (60 <= minute < 90)
            anomalous = attack | (rng.random(n) < 0.002)
            confidence = np.clip(rng.normal(0.95 if minute < 150 else 0.75, 0.03, n), 0, 1)
            rows = SliRows.from_columns(
                bucket=(ts // 60).astype(np.int64) * 60, model=np.full(n, "m", dtype=object), client=client, ts=ts,
                flags={"events": np.ones(n, bool), "traffic_events": np.ones(n, bool), "anomalous": anomalous,
                       "clean_events": ~anomalous}, confidence=confidence)
            batches.append(SliBatch(instance, float(ts.max()), 0, {"inference-logs/0": (0, n)}, rows))
    return batches


def merged(tables):
    """Rows merged to one per (model, client, bucket), in key order."""
    rows = SliRows.concat(tables).combined()
    return rows.take(np.lexsort((rows.client.astype(str), rows.model.astype(str), rows.bucket)))


def stored(store):
    """The per-client rows a store holds, in its messages and folds."""
    return merged([entry.rows for _, _, entry in AlerterState(store).messages()])


def same_rows(a, b):
    """Equal keys and counters (sums in another order may differ in the last bit)."""
    return (np.array_equal(a.bucket, b.bucket) and a.client.tolist() == b.client.tolist()
            and np.allclose(a.values, b.values, rtol=1e-12, atol=0) and np.array_equal(a.first, b.first))


def run(batches, store, start=0):
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    return [a for offset, batch in enumerate(batches) if offset >= start for a in alerter.apply(offset, batch, now=0.0)]


class CrashingStore(dict):
    """A store whose process dies after ``writes`` writes."""

    def __init__(self, writes):
        super().__init__()
        self.left = writes

    def __setitem__(self, key, value):
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1
        super().__setitem__(key, value)


def test_uninterrupted_run_fires_and_resolves():
    alerts = run(stream(), {})
    rules = {(a.rule, a.status, a.client_id) for a in alerts}
    assert ("anomaly/page", "firing", "attacker") in rules and ("anomaly/page", "resolved", "attacker") in rules
    assert any(a.rule == "drift/ticket" for a in alerts)
    assert not any(a.client_id in ("a", "b") for a in alerts)


# Four writes a message (its rows and events, the model's total, the source, the progress): a crash at each.
@pytest.mark.parametrize("writes", [1, 7, 302, 801, 1500, 1502, 1919])
def test_crash_at_any_write_then_redelivery_gives_the_same_alerts(writes):
    batches = stream()
    reference_store = {}
    reference = run(batches, reference_store)
    store = CrashingStore(writes)
    before = []
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    with pytest.raises(SystemExit):
        for offset, batch in enumerate(batches):
            before += alerter.apply(offset, batch, now=0.0)
    crashed_at = offset
    store.left = -1  # the restarted process writes freely
    committed = max(0, crashed_at - 5)  # the consumer resumes from an older committed offset
    after = run(batches, store, start=committed)
    assert [a.alert_id for a in before] + [
        a.alert_id for a in after if a.alert_id not in {b.alert_id for b in before}
    ] == [a.alert_id for a in reference]
    assert same_rows(stored(store), stored(reference_store))  # every event once, folded or not
    totals = {k: v["v"] for k, v in store.items() if k.startswith("t")}
    assert totals == {k: v["v"] for k, v in reference_store.items() if k.startswith("t")}
    repeated = [a for a in after if a.alert_id in {b.alert_id for b in before}]
    assert all(a.fired_at >= (crashed_at - 1) * 30 for a in repeated)  # only the message in flight can repeat


def test_a_crash_after_storing_progress_but_before_publishing_loses_no_transition():
    batches = stream()
    store, published = {}, []
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    for offset, batch in enumerate(batches):
        released = alerter.apply(offset, batch, now=0.0)
        if released and any(a.status == "firing" for a in published):  # dies before publishing these
            break
        published += released
    assert released and offset < len(batches) - 1
    restarted = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert [a.alert_id for a in restarted.unconfirmed] == [a.alert_id for a in released]
    assert all(restarted.apply(o, batches[o], now=0.0) == [] for o in range(offset - 3, offset + 1))  # redelivered
    rest = [a for o in range(offset + 1, len(batches)) for a in restarted.apply(o, batches[o], now=0.0)]
    assert restarted.unconfirmed == [] or restarted.unconfirmed == rest[-len(restarted.unconfirmed):]
    assert [a.alert_id for a in published + released + rest] == [a.alert_id for a in run(batches, {})]


def test_state_written_underneath_by_the_previous_process_is_taken_in_not_lost():
    batches = stream()
    reference = run(batches, {})
    fired = next(i for i, b in enumerate(batches) if run(batches[:i + 1], {}) != run(batches[:i], {}))
    first_store = {}
    dead = DurableAlerter(RULES, first_store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    before = [a for o in range(fired) for a in dead.apply(o, batches[o], now=0.0)]
    stale = dict(first_store)  # what the restarted process recovered: the state before the last message
    lost = dead.apply(fired, batches[fired], now=0.0)  # its transition never reached the alerts topic
    assert lost
    restarted = DurableAlerter(RULES, stale, bucket_s=60, grace_s=60, idle_source_s=1e9)
    stale.update(first_store)  # then the dead process's last changelog records arrive
    redelivered = restarted.apply(fired, batches[fired], now=0.0)
    assert [a.alert_id for a in redelivered] == [a.alert_id for a in lost]  # published at last
    windows = [slo.windows._total.sum() for slo in (dead.alerter.slos[1], restarted.alerter.slos[1])]
    assert windows[0] == windows[1]  # and the message's events are in the windows, not lost
    after = [a for o in range(fired + 1, len(batches)) for a in restarted.apply(o, batches[o], now=0.0)]
    assert [a.alert_id for a in before + lost + after] == [a.alert_id for a in reference]


def test_restart_rebuilds_open_alerts_and_keeps_the_messages_the_client_rules_need(caplog):
    caplog.set_level("INFO", logger="advmon.durable")
    batches = stream()
    store = {}
    first = run(batches[:150], store)
    assert any(a.status == "firing" and a.client_id == "attacker" for a in first)
    restarted = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert {a.client_id for a in restarted.firing} >= {"attacker"}
    assert restarted.apply(149, batches[149], now=0.0) == []  # already applied before the restart
    for offset in range(150, len(batches)):
        restarted.apply(offset, batches[offset], now=0.0)
    assert restarted.client_retention_s > 240 * 60  # the client rules look back further than the stream goes
    assert same_rows(stored(store), merged([b.rows for b in batches]))  # every row of every message
    assert sum(k.startswith("r\x1ffolded") for k in store) < sum(k.startswith("r") for k in store) < len(batches)
    assert "folded to a row per client and bucket" in caplog.text  # what operators see of it


MODEL_RULES = load_rules_text("""
slos:
  - {name: anomaly-model, sli: input_anomaly_rate, objective: 0.995, min_events: 20}
drift:
  - {name: drift, detector: page_hinkley, series: clean_confidence_mean, delta: 0.005, threshold: 0.2}
""")


def test_per_client_rows_are_kept_as_long_as_client_rules_look_back_and_totals_for_the_slo_windows():
    batches, crash = stream(), 260  # the crash at minute 130: the drift (minute 150) is still to come
    reference = DurableAlerter(MODEL_RULES, {}, bucket_s=60, grace_s=60, idle_source_s=1e9)
    expected = [[a.alert_id for a in reference.apply(o, b, now=0.0)] for o, b in enumerate(batches)]
    store = {}
    first = DurableAlerter(MODEL_RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert first.client_retention_s == 15 * 60 + 2 * 60 + 60 < first.retention_s  # drift names clients of 15 min
    for offset in range(crash):
        first.apply(offset, batches[offset], now=0.0)
    minutes = len(np.unique(stored(store).bucket))  # + a sweep interval, a fold's span and the open buckets:
    assert first.client_retention_s // 60 <= minutes <= first.client_retention_s // 60 + 5 + 7 + 2
    assert len([k for k in store if k.startswith("t")]) == crash // 2  # every minute so far, summed per model
    restarted = DurableAlerter(MODEL_RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    got = [[a.alert_id for a in restarted.apply(o, batches[o], now=0.0)] for o in range(crash, len(batches))]
    assert got == expected[crash:] and any(got)  # the SLO windows and the detector rebuilt from totals: same alerts
    assert len(restarted.firing) == len(reference.firing)


def test_state_written_before_totals_existed_rebuilds_from_its_per_client_rows():
    batches = stream(minutes=200)
    store = {}
    alerter = DurableAlerter(MODEL_RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    alerter.client_retention_s = alerter.retention_s  # as an earlier version: every row kept for the SLO windows
    for offset in range(200):  # minute 100: the attack of minutes 60-90 still in the SLO windows
        alerter.apply(offset, batches[offset], now=0.0)
    old_store = {k: v for k, v in store.items() if not k.startswith("t")}  # and no totals
    reference = DurableAlerter(MODEL_RULES, dict(store), bucket_s=60, grace_s=60, idle_source_s=1e9)
    upgraded = DurableAlerter(MODEL_RULES, old_store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert [a.alert_id for a in upgraded.firing] == [a.alert_id for a in reference.firing]
    tail = range(200, len(batches))
    assert [[a.alert_id for a in upgraded.apply(o, batches[o], now=0.0)] for o in tail] == \
        [[a.alert_id for a in reference.apply(o, batches[o], now=0.0)] for o in tail]


def test_watermark_is_the_slowest_live_instance():
    store = {}
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=30)
    batches = stream(minutes=3)
    alerter.apply(0, batches[0], now=0.0)   # ingest-0 at minute 0
    alerter.apply(1, batches[3], now=0.0)   # ingest-1 already at minute 1
    assert alerter.watermark(now=0.0) == batches[0].watermark
    assert alerter.watermark(now=100.0) == float("-inf")  # both silent for longer than idle_source_s


def test_sources_read_back_after_a_long_hand_over_hold_the_watermark_until_they_go_quiet_again():
    """Partitions that reach an alerter 100 s after their last message was applied (a restart, a slow hand-over):
    the instance whose message comes first must not take the watermark past the others' messages still behind it
    in the backlog; an instance that stays silent for ``idle_source_s`` from then on stops holding it."""
    from dataclasses import replace

    batches = stream(minutes=4)
    store: dict = {}
    first = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=30)
    first.apply(0, batches[0], now=0.0)  # ingest-0
    first.apply(1, replace(batches[1], instance="ingest-1"), now=0.0)
    slow = min(batches[0].watermark, batches[1].watermark)
    survivor = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=30)
    survivor.apply(2, batches[4], now=100.0)  # ingest-0's next message, read first after the hand-over
    assert survivor.watermark(now=100.0) == slow  # ingest-1's next messages are behind it: it still holds
    assert survivor.watermark(now=129.0) == slow
    survivor.apply(3, batches[6], now=125.0)  # ingest-0 goes on; ingest-1 stays silent
    assert survivor.watermark(now=131.0) == batches[6].watermark  # ingest-1: silent for 31 s since the resume


@pytest.mark.parametrize(("flag", "role", "topic"), [("remote_scoring", "scorer", "scores"),
                                                     ("remote_matching", "matcher", "sli-buckets")])
def test_windows_wait_for_the_scorer_or_matcher_ingest_leaves_work_to(flag, role, topic):
    from dataclasses import replace

    batches = stream(minutes=3)
    alerter = DurableAlerter(RULES, {}, bucket_s=60, grace_s=60, idle_source_s=30)
    alerter.apply(0, replace(batches[0], **{flag: True}), now=0.0)
    assert alerter.watermark(now=0.0) == float("-inf")  # it has not reported yet
    helper = replace(batches[1], instance=f"{role}-0", role=role, watermark=batches[0].watermark - 30)
    alerter.apply(1, helper, now=0.0, topic=topic)  # the scorer's own topic counts offsets apart
    assert alerter.watermark(now=0.0) == batches[0].watermark - 30  # it is the slowest source
    assert alerter.apply(1, helper, now=0.0, topic=topic) == [] and alerter.skipped_messages == 1
    restarted = DurableAlerter(RULES, alerter.state.store, bucket_s=60, grace_s=60, idle_source_s=30)
    assert restarted.watermark(now=0.0) == batches[0].watermark - 30  # who waits for whom survives a restart


@pytest.mark.parametrize(("flag", "role", "topic"), [("remote_scoring", "scorer", "scores"),
                                                     ("remote_matching", "matcher", "sli-buckets")])
def test_a_scorer_or_matcher_heard_before_ingest_closes_no_window_ingest_has_not_reported(flag, role, topic):
    """The alerter reads ``scores`` and ``sli-buckets`` apart: the scorer's first message (its watermark one ingest
    reached) can come before ingest's first. Windows closed on it alone were evaluated without ingest's rows; a
    broker e2e run paged 180 s late that way."""
    from dataclasses import replace

    batches = stream(minutes=3)
    alerter = DurableAlerter(RULES, {}, bucket_s=60, grace_s=60, idle_source_s=30)
    ingest = replace(batches[2], **{flag: True})
    helper = replace(batches[2], instance=f"{role}-0", role=role, rows=batches[2].rows.take(
        np.zeros(len(batches[2].rows), bool)), partitions={}, inputs=("", 0))
    assert alerter.apply(0, helper, now=0.0, topic=topic) == []
    assert alerter.watermark(now=0.0) == float("-inf") and alerter.alerter.evaluated_until is None
    alerter.apply(0 if topic == "scores" else 1, replace(ingest, watermark=batches[1].watermark), now=1.0)
    assert alerter.watermark(now=1.0) == batches[1].watermark  # ingest's, not the helper's further one


def test_every_input_partition_holds_until_reported_and_where_it_got_to_after_a_hand_over():
    from dataclasses import replace

    batch = stream(minutes=1)[0]
    alerter = DurableAlerter(RULES, {}, bucket_s=60, grace_s=60, idle_source_s=30)

    def report(offset, instance, watermark, partitions, now):
        alerter.apply(offset, replace(batch, instance=instance, watermark=watermark, partitions=partitions,
                                      inputs=("logs", 2)), now=now)
        return alerter.watermark(now)

    assert report(0, "ingest-0", 200.0, {"logs/0": 200.0}, 0.0) == float("-inf")  # logs/1 not reported yet
    assert report(1, "ingest-1", 150.0, {"logs/1": 150.0}, 1.0) == 150.0
    # logs/0 moves to ingest-1 (nothing read yet) and logs/1 to ingest-0, which runs ahead
    assert report(2, "ingest-0", 400.0, {"logs/1": 400.0}, 2.0) == 150.0
    assert report(3, "ingest-1", 300.0, {"logs/0": float("-inf")}, 3.0) == 200.0  # logs/0 holds where it got to
    assert report(4, "ingest-1", 420.0, {"logs/0": 410.0}, 4.0) == 400.0
    assert alerter.watermark(now=40.0) == float("-inf")  # all quiet past idle_source_s: nothing closes


def with_evidence(batches):
    """The batches with the attacker's anomalous events flagged (three a message while the attack lasts)."""
    out = []
    for offset, batch in enumerate(batches):
        attacking = (batch.rows.client == "attacker") & (batch.rows.column("anomalous") > 0)
        n = 3 * int(attacking.any())
        flagged = FlaggedEvents.of([f"e{offset}-{i}" for i in range(n)], ["m"] * n, ["attacker"] * n,
                                   [batch.watermark] * n, ["anomalous"] * n, [f"fp{offset % 4}"] * n)
        out.append(dataclasses.replace(batch, flagged=flagged))
    return out


def test_evidence_samples_survive_a_restart_per_client_and_per_model():
    batches = with_evidence(stream(minutes=100))
    store = {}
    live = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    for offset in range(150):  # minute 75: the attack of minutes 60-90 has been flagged for a while
        live.apply(offset, batches[offset], now=0.0)
    restarted = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    for key in (("m", "attacker"), ("m", None)):
        assert live.alerter.samples.samples(*key) == restarted.alerter.samples.samples(*key)
        assert len(live.alerter.samples.samples(*key)[0]) == live.alerter.samples.per_key


def _packed(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, "<f8").tobytes()).decode("ascii")


def written_before_messages(store: dict) -> dict:
    """``store`` as builds before message entries wrote it: one row per (model, client, bucket) and the
    latest five evidence samples per (model, client), each stamped with the offset that last changed it."""
    state = AlerterState(store)
    messages = [entry for _, _, entry in state.messages()]
    through = state.progress.offsets["sli-buckets"]
    old = {key: value for key, value in store.items() if not key.startswith("r")}
    rows = SliRows.concat([m.rows for m in messages]).combined()
    for bucket, model, client, values, first in zip(rows.bucket.tolist(), rows.model, rows.client, rows.values,
                                                    rows.first, strict=True):
        old[f"b\x1f{model}\x1f{client}\x1f{bucket}"] = {"o": {"sli-buckets": through}, "v": _packed(values),
                                                         "f": _packed(first)}
    flagged = FlaggedEvents.concat([m.flagged for m in messages])
    for model, client in set(zip(flagged.model, flagged.client_id, strict=True)):
        mine = (flagged.model == model) & (flagged.client_id == client)
        samples = [[i, f] for i, f in zip(flagged.event_id[mine], flagged.fingerprint[mine], strict=True)][-5:]
        old[f"e\x1f{model}\x1f{client}"] = {"o": {"sli-buckets": through}, "samples": samples}
    return old


def test_a_store_written_before_message_entries_rebuilds_the_same_alerts_and_evidence():
    batches = with_evidence(stream(minutes=200))
    store = {}
    alerter = DurableAlerter(RULES, store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    for offset in range(150):
        alerter.apply(offset, batches[offset], now=0.0)
    old_store = written_before_messages(store)
    assert not any(key.startswith("r") for key in old_store) and any(key.startswith("b") for key in old_store)
    reference = DurableAlerter(RULES, dict(store), bucket_s=60, grace_s=60, idle_source_s=1e9)
    upgraded = DurableAlerter(RULES, old_store, bucket_s=60, grace_s=60, idle_source_s=1e9)
    assert [a.alert_id for a in upgraded.firing] == [a.alert_id for a in reference.firing] and upgraded.firing
    key = ("m", "attacker")
    assert upgraded.alerter.samples.samples(*key) == reference.alerter.samples.samples(*key)
    tail = range(150, len(batches))
    assert [[a.alert_id for a in upgraded.apply(o, batches[o], now=0.0)] for o in tail] == \
        [[a.alert_id for a in reference.apply(o, batches[o], now=0.0)] for o in tail]
