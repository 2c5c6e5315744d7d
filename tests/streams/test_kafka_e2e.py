"""The Kafka daemons end to end on a real broker: ``advmon produce`` -> ``ingest`` -> ``alerter``.

The oracle is ``advmon replay`` of the same file (the in-process runtime): the daemons must find
the same alert transitions, dead-letter the same records, count every event exactly once, and
keep that true when the ingest worker and the alerter are SIGKILLed mid-stream and restarted.
"""

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import orjson
import pytest
import yaml

from monitor.errors import ConfigError
from monitor.settings import Settings
from monitor.spec.rules import default_rules_dir
from streams.broker import free_port
from streams.topics import SpanReader, Topics, check_alerter_partitions, create_topics
from tests.streams.conftest import alerts_on, read_topic

pytestmark = pytest.mark.integration
class Producer:
    def __init__(self, work, env, rate=0.0, path="events.jsonl"):
        args = ["produce", str(path)] + (["--rate", str(rate)] if rate else [])
        self.log = work / f"produce-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "monitor", *args], cwd=work, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)

    def wait(self, timeout):
        code = self.process.wait(timeout=timeout)
        assert code == 0, self.log.read_text()[-3000:]


def topics_for(kafka, prefix):
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(kafka.bootstrap, topics.specs(input_partitions=4))
    return topics


def committed_batches(kafka, topic, expected):
    """Every committed sli-buckets message, decoded, read until they count ``expected`` events (or 120 s)."""
    from monitor.contracts.sli_buckets import SliBatch

    def batches(records):
        return [SliBatch.decode(r.value) for r in records]

    records = read_topic(kafka.bootstrap, topic, until=lambda rs: events_in(batches(rs)) >= expected, timeout_s=120)
    return batches(records)


def events_in(batches):
    return int(sum(b.rows.column("events").sum() for b in batches))


def committed_events(kafka, topic, expected):
    """Sum of ``events`` over every committed sli-buckets message (each valid event counted once)."""
    return events_in(committed_batches(kafka, topic, expected))


def wait_for_alerts(kafka, topic, expected_ids, timeout_s=180):
    records = read_topic(kafka.bootstrap, topic, timeout_s=timeout_s,
                         until=lambda rs: expected_ids <= {a["alert_id"] for a in alerts_on(rs)})
    return alerts_on(records)


def assert_committed_past_what_it_read(kafka, group, topic, partitions, timeout_s=30):
    """The consumer group has committed past every message of ``topic`` (only transaction markers and aborted
    messages lie beyond its offsets), once its next commit is out: a restart reads nothing again."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    admin, ends_of, spans = KafkaAdminClient(bootstrap_servers=kafka.bootstrap), KafkaConsumer(
        bootstrap_servers=kafka.bootstrap), SpanReader(kafka.bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ends = ends_of.end_offsets(tps)
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            committed = {tp: o.offset for tp, o in offsets.items() if tp in ends}
            beyond = {tp: len(spans.read(topic, tp.partition, committed.get(tp, 0), ends[tp])[0]) for tp in tps}
            if sum(beyond.values()) == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        left = {tp.partition: f"{n} messages past the committed offset {committed.get(tp)} (end {ends[tp]})"
                for tp, n in beyond.items() if n}
        assert not left, left
    finally:
        admin.close()
        ends_of.close()
        spans.close()


TICKET_SLACK_S = 300  # a ticket may move this much in event time after a restart (see assert_like_oracle)


def assert_like_oracle(kafka, topic, expected, context, timeout_s=180):
    """Every transition the oracle found is on the alerts topic: pages with the same id (so at the same event
    time), updates included; tickets within ``TICKET_SLACK_S`` of event time. The demo's profile-mismatch ticket
    is borderline (2.01% of inputs against 2.00% allowed). It used to move by minutes between runs: rows that
    arrived minutes ahead of evaluation pushed the oldest minutes of a burn-rate window out of its ring, so a
    window's length depended on batching, fixed. After a SIGKILL and restart it still moved once, by 180 s (the
    cause is not found), so tickets keep the slack; pages, the figure that wakes people, get none."""
    pages = {a.alert_id: a for a in expected.values() if a.severity == "page"}
    tickets = {(a.dedup_key, a.status): a for a in expected.values() if a.severity != "page"}

    def transitions(records):
        out = {}
        for a in alerts_on(records):
            out.setdefault((a["dedup_key"], a["status"]), a)
        return out

    def complete(records):
        return set(pages) <= {a["alert_id"] for a in alerts_on(records)} and set(tickets) <= set(transitions(records))

    records = read_topic(kafka.bootstrap, topic, timeout_s=timeout_s, until=complete)
    got = {a["alert_id"]: a for a in alerts_on(records)}
    missing = sorted((a.rule, a.status, a.resolved_at or a.fired_at) for i, a in pages.items() if i not in got)
    published = sorted((a["rule"], a["status"], a["resolved_at"] or a["fired_at"]) for a in got.values())
    assert not missing, (f"{len(missing)} of {len(pages)} pages missing (of {len(got)} alerts published): "
                         f"{missing[:8]}; published: {published}; {context()}")  # a string: printed whole
    have = transitions(records)
    assert set(tickets) <= set(have), (sorted(a.rule for a in expected.values()), context())
    for key, want in tickets.items():
        at = have[key]["resolved_at"] or have[key]["fired_at"]
        assert abs(at - (want.resolved_at or want.fired_at)) <= TICKET_SLACK_S, (want.rule, at, context())
    return alerts_on(records)


def start_pair(daemons, work, out, ports=(0, 0), rules=None):
    ingest = daemons("ingest", "ingest", "--instance", "ingest-0", "--profile", str(work / "profile.npz"),
                     "--http-port", str(ports[0])).start()
    alerter = daemons("alerter", "alerter", "--http-port", str(ports[1]), "--alerts-out", str(out / "delivered.jsonl"),
                      *(["--rules", str(rules)] if rules else [])).start()
    return ingest, alerter


def rules_with_webhook(directory, url):
    """The shipped rules, every alert also routed to an Alertmanager-style webhook at ``url``."""
    document = yaml.safe_load((default_rules_dir() / "slos.yaml").read_text())
    document["receivers"] = [{"name": "hook", "type": "alertmanager", "url": url}]
    document["routes"] = [{"receivers": ["stdout", "hook"], "group_by": ["slo", "model", "client_id"]}]
    directory.mkdir()
    (directory / "slos.yaml").write_text(yaml.safe_dump(document))
    return directory


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class WebhookServer:
    """An Alertmanager-style webhook receiver on loopback, recording alert fingerprints and statuses."""

    def __init__(self):
        from tests.notify.sinks.test_http import Receiver

        self.receiver = Receiver()
        self.url = self.receiver.url

    @property
    def alerts(self):
        return [a for _, _, body in self.receiver.requests for a in orjson.loads(body)["alerts"]]

    @property
    def transitions(self):
        return [(a["fingerprint"], a["status"]) for a in self.alerts]

    def close(self):
        self.receiver.close()


def test_topics_create_is_idempotent(kafka, prefix):
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    first = create_topics(kafka.bootstrap, topics.specs(input_partitions=3))
    again = create_topics(kafka.bootstrap, topics.specs(input_partitions=5))
    assert {outcome for _, outcome in first} == {"created"}
    outcomes = {spec.name: outcome for spec, outcome in again}
    resized = {topics.inference_logs, topics.score_requests}  # the two sized by input_partitions
    assert {outcomes[name] for name in resized} == {"exists with 3 partitions (wanted 5; left as is)"}
    assert {o for name, o in outcomes.items() if name not in resized} == {"exists"}
    check_alerter_partitions(Settings(topic_prefix=prefix, kafka_bootstrap=kafka.bootstrap))  # one, as created
    with pytest.raises(ConfigError, match="sli-buckets has 1 partitions but ADVMON_ALERTER_PARTITIONS is 3"):
        check_alerter_partitions(Settings(topic_prefix=prefix, kafka_bootstrap=kafka.bootstrap, alerter_partitions=3))


def test_daemons_alert_like_replay_and_dead_letter_poison(kafka, prefix, daemons, traffic, tmp_path):
    work, expected, dead, valid = traffic
    topics = topics_for(kafka, prefix)
    ports = (free_port(), free_port())
    hook = WebhookServer()
    ingest, alerter = start_pair(daemons, work, tmp_path, ports, rules_with_webhook(tmp_path / "rules", hook.url))
    env = ingest.env
    Producer(work, env).wait(timeout=120)

    alerts = wait_for_alerts(kafka, topics.alerts, set(expected))
    got = {a["alert_id"]: a for a in alerts}
    assert set(expected) <= set(got), (sorted(a.rule for a in expected.values()), ingest.log(), alerter.log())
    for alert_id, alert in expected.items():
        assert got[alert_id]["time_to_detect_s"] == pytest.approx(alert.time_to_detect_s)
    unexpected = {a["rule"] for i, a in got.items() if i not in expected and (a["resolved_at"] or a["fired_at"])
                  < max(x.fired_at for x in expected.values())}
    assert not unexpected

    letters = read_topic(kafka.bootstrap, topics.dead_letters, until=lambda rs: len(rs) >= dead, timeout_s=30)
    assert len(letters) == dead
    reasons = [orjson.loads(r.value)["reason"] for r in letters]
    assert any(r.startswith("record too large") for r in reasons) and any(r.startswith("invalid JSON") for r in reasons)
    assert committed_events(kafka, topics.sli_buckets, valid) == valid

    for port in ports:  # every daemon: liveness, readiness, metrics
        assert http_get(port, "/healthz")[0] == 200 and http_get(port, "/readyz")[0] == 200
    status, metrics = http_get(ports[0], "/metrics")
    assert status == 200 and 'advmon_events_total{model="digits-mlp"}' in metrics
    alerter_metrics = http_get(ports[1], "/metrics")[1]
    assert 'advmon_alerts_total{' in alerter_metrics
    # its start was a rebalance with table recovery; it is over (faust's sensor saw it end)
    assert "\nadvmon_alerter_rebalance_seconds 0.0\n" in alerter_metrics

    wanted = sorted((a.dedup_key[:16], a.status) for a in expected.values())
    deadline = time.monotonic() + 30  # every transition reached the webhook
    while time.monotonic() < deadline and not set(wanted) <= set(hook.transitions):
        time.sleep(0.5)
    hook.close()
    assert set(wanted) <= set(hook.transitions)
    assert len(hook.transitions) == len(set(hook.transitions))  # and only once
    assert ingest.terminate() == 0 and alerter.terminate() == 0  # SIGTERM: drain, commit, exit cleanly
    assert "Traceback" not in ingest.log() + alerter.log()


def test_killed_daemons_lose_nothing_and_fire_nothing_twice(kafka, prefix, daemons, traffic, tmp_path):
    work, expected, dead, valid = traffic
    topics = topics_for(kafka, prefix)
    ingest, alerter = start_pair(daemons, work, tmp_path)
    producer = Producer(work, ingest.env, rate=1500)

    # SIGKILL the ingest worker once it has committed a few batches, then restart it.
    read_topic(kafka.bootstrap, topics.sli_buckets, until=lambda rs: len(rs) >= 3, timeout_s=60)
    assert producer.process.poll() is None, "the stream should still be flowing when ingest is killed"
    ingest.kill()
    time.sleep(1.0)
    ingest.start()
    # SIGKILL the alerter once it has published its first alert and its state is in the changelog
    # (more alerts are due), then restart it.
    published = read_topic(kafka.bootstrap, topics.alerts, until=lambda rs: len(rs) >= 1, timeout_s=120)
    read_topic(kafka.bootstrap, f"{prefix}advmon-alerter-state-changelog", timeout_s=60,
               until=lambda rs: any(r.key == b'"progress"' for r in rs))
    alerter.kill()
    assert len({a["alert_id"] for a in alerts_on(published)}) < len(expected)
    time.sleep(1.0)
    alerter.start()
    producer.wait(timeout=120)

    alerts = assert_like_oracle(kafka, topics.alerts, expected, lambda: (ingest.log(), alerter.log()))
    assert committed_events(kafka, topics.sli_buckets, valid) == valid  # nothing lost, nothing counted twice
    letters = read_topic(kafka.bootstrap, topics.dead_letters, until=lambda rs: len(rs) >= dead, timeout_s=30)
    assert len(letters) == dead

    published = {a["alert_id"] for a in alerts}
    deadline = time.monotonic() + 60
    delivered = []
    while time.monotonic() < deadline:
        path = tmp_path / "delivered.jsonl"
        delivered = [orjson.loads(line)["alert_id"] for line in path.read_bytes().splitlines()] if path.exists() else []
        if published <= set(delivered):
            break
        time.sleep(1)
    assert published <= set(delivered)  # every transition published was delivered
    assert len(delivered) == len(set(delivered)), "an alert transition was delivered twice"
    assert "alerter state rebuilt" in alerter.log()  # the restarted alerter resumed from its changelog


def test_remote_scorer_and_matcher_find_what_in_process_detection_finds(kafka, prefix, daemons, traffic, tmp_path):
    """Ingest leaves embeddings to ``advmon scorer`` and queries to ``advmon matcher`` (compose's GPU profile):
    the queries travel with the embeddings and the scorer passes them on, its flags marked, so the daemons page
    as replay does and report every suspicious input replay reports, once."""
    from monitor.contracts.match_requests import MatchRequestBatch
    from monitor.contracts.score_requests import ScoreRequestBatch

    work, expected, dead, valid = traffic
    topics = topics_for(kafka, prefix)
    profile = str(work / "profile.npz")
    # Four daemons in a chain on two cores: under load a link can be silent for more than 3 s (the fixture's idle
    # time, which then lets the next one close minutes without it). 15 s, as in the other multi-daemon tests (the
    # shipped default is 120 s). The pages this test found 120-180 s late in CI were another cause: the alerter
    # applied the scorer's first message before ingest's and closed minutes on it (fixed; tests/alerting).
    patient = {"ADVMON_IDLE_SOURCE_SECONDS": "15"}
    ingest = daemons("ingest", "ingest", "--instance", "ingest-0", "--remote-scoring", "--remote-matching",
                     "--profile", profile, "--http-port", "0", environ=patient).start()
    scorer = daemons("scorer", "scorer", "--instance", "scorer-0", "--profile", profile, "--http-port", "0",
                     environ=patient).start()
    matcher = daemons("matcher", "matcher", "--instance", "m-0", "--http-port", "0", environ=patient).start()
    alerter = daemons("alerter", "alerter", "--http-port", "0", environ=patient).start()
    Producer(work, ingest.env).wait(timeout=120)

    everyone = (ingest, scorer, matcher, alerter)
    assert_like_oracle(kafka, topics.alerts, expected, lambda: [d.log()[-3000:] for d in everyone])
    requests = [ScoreRequestBatch.decode(r.value) for r in read_topic(
        kafka.bootstrap, topics.score_requests, until=lambda rs: len(rs) > 0, timeout_s=30)]
    assert any(r.groups for r in requests) and all(r.matches is not None for r in requests)  # both travelled
    passed_on = [MatchRequestBatch.decode(r.value) for r in read_topic(
        kafka.bootstrap, topics.match_requests, until=lambda rs: len(rs) > 0, timeout_s=30)]
    assert {m.instance for m in passed_on} == {"ingest-0"} and any(m.groups for m in passed_on)
    replay = [orjson.loads(line) for line in (work / "suspicious.jsonl").read_bytes().splitlines()]
    reported = alerts_on(read_topic(kafka.bootstrap, topics.suspicious_inputs, timeout_s=60,
                                    until=lambda rs: len(rs) >= len(replay)))
    assert sorted(d["event_id"] for d in reported) == sorted(d["event_id"] for d in replay)  # each once
    near = sorted(d["event_id"] for d in reported if d["reason"] == "near-duplicate")
    assert near and near == sorted(d["event_id"] for d in replay if d["reason"] == "near-duplicate")
    assert any(d["reason"] == "anomalous-embedding" for d in reported)  # replay says "anomalous" for those
    assert all(d.terminate() == 0 for d in everyone)
    assert "Traceback" not in "".join(d.log() for d in everyone)


def test_three_ingest_workers_one_killed_count_every_event_once(kafka, prefix, daemons, traffic, tmp_path):
    """Consumer-group scale-out: 3 ingest workers on 6 partitions with the matcher and the alerter; one worker is
    SIGKILLed mid-stream and not restarted. Its partitions move to the two survivors (after the group's session
    timeout: static membership), every valid event is counted once, no input offset is covered by two committed
    batches, every poison record is dead-lettered once, and the alerts are replay's (its partitions hold the
    watermark where it stopped until a survivor reports them)."""
    from monitor.contracts.sli_buckets import SliBatch

    work, expected, dead, valid = traffic
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(kafka.bootstrap, topics.specs(input_partitions=6))
    patient = {"ADVMON_IDLE_SOURCE_SECONDS": "45"}  # more than the session timeout and the hand-over after it
    workers = [daemons(f"ingest-{i}", "ingest", "--instance", f"ingest-{i}", "--profile", str(work / "profile.npz"),
                       "--remote-matching", "--http-port", "0", environ=patient).start() for i in range(3)]
    matcher = daemons("matcher", "matcher", "--instance", "m-0", "--http-port", "0", environ=patient).start()
    alerter = daemons("alerter", "alerter", "--http-port", "0", environ=patient).start()
    producer = Producer(work, workers[0].env, rate=1500)

    read_topic(kafka.bootstrap, topics.sli_buckets, timeout_s=120,
               until=lambda rs: {SliBatch.decode(r.value).instance for r in rs} >= {"ingest-0", "ingest-1", "ingest-2"})
    assert producer.process.poll() is None, "the stream should still be flowing when a worker is killed"
    workers[1].kill()
    producer.wait(timeout=120)

    messages = committed_batches(kafka, topics.sli_buckets, valid)
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for message in (m for m in messages if m.role == "ingest"):
        for partition, (first, end) in message.offsets.items():
            spans.setdefault(partition, []).append((first, end, message.instance))
    assert len(spans) == 6
    for partition, covered in spans.items():
        covered.sort()
        assert all(a[1] <= b[0] for a, b in zip(covered[:-1], covered[1:], strict=True)), (partition, covered)
    assert events_in(messages) == valid  # nothing lost, nothing counted twice
    # the killed worker's partitions were taken over: the survivors read them on from where it stopped
    last = {p: max(end for _, end, who in covered if who == "ingest-1") for p, covered in spans.items()
            if any(who == "ingest-1" for _, _, who in covered)}
    assert last, "the killed worker never committed a batch"
    for partition, stopped in last.items():
        assert any(first >= stopped and who != "ingest-1" for first, _, who in spans[partition]), (partition, stopped)
    letters = read_topic(kafka.bootstrap, topics.dead_letters, until=lambda rs: len(rs) >= dead, timeout_s=30)
    assert len(letters) == dead
    survivors = (workers[0], workers[2], matcher, alerter)
    assert_like_oracle(kafka, topics.alerts, expected, lambda: [d.log()[-3000:] for d in survivors])
    for survivor in survivors:
        assert survivor.terminate() == 0, survivor.log()
        assert "Traceback" not in survivor.log()
    # margins shared: none twice; all but the open minutes of the killed worker (SIGTERM published the others'; the
    # killed one may have died before any of its minutes closed)
    counted, margins, senders = margins_shared(kafka, topics, work, timeout_s=10)
    assert 0.95 * margins <= counted <= margins and senders >= 2


def margins_shared(kafka, topics, work, timeout_s=60):
    """How many of the traffic's production events with a margin the margin-counts topic counts (each worker sends
    its closed minutes' counts, the others rank against them), how many there are, and how many workers sent."""
    from monitor.contracts.margin_counts import MarginCountsBatch
    from monitor.detect.parsing import parse_batch

    batch = parse_batch((work / "events.jsonl").read_bytes().splitlines()).batch
    expected = int((np.isfinite(batch.margin) & ~batch.is_canary).sum())

    def counted(records):
        return sum(float(p.count.sum()) for r in records for p in MarginCountsBatch.decode(r.value).parts)

    records = read_topic(kafka.bootstrap, topics.margin_counts, until=lambda rs: counted(rs) >= expected,
                         timeout_s=timeout_s)
    assert expected > 1000
    return counted(records), expected, len({MarginCountsBatch.decode(r.value).sender for r in records})


def test_two_ingest_workers_and_the_matcher_alert_like_replay(kafka, prefix, daemons, sybil_traffic, tmp_path):
    """Global query matching: two ingest workers fingerprint their partitions' queries and leave matching to
    ``advmon matcher``, which matches every bucket in event-time order behind both workers' watermarks. The
    Sybil attack's keys land on different partitions, so on different workers; the daemons still page as
    replay does (same alert ids: the same event time). The matcher is killed with SIGKILL once it has matched
    the attack's first cross-key queries and restarted: it rebuilds its index and the queries waiting for their
    minute from match-requests, so the attack pages at the same minute and every near-duplicate replay found
    is reported once."""
    from monitor.contracts.match_requests import MatchRequestBatch
    from monitor.contracts.sli_buckets import SliBatch

    work, expected, dead, valid = sybil_traffic
    assert any(a.rule.startswith("sybil-group") for a in expected.values())
    topics = topics_for(kafka, prefix)
    profile = str(work / "profile.npz")
    patient = {"ADVMON_IDLE_SOURCE_SECONDS": "15"}  # a partition handed over is reported again within this
    workers = [daemons(f"ingest-{i}", "ingest", "--instance", f"ingest-{i}", "--remote-matching", "--profile", profile,
                       "--http-port", "0", environ=patient).start() for i in range(2)]
    matcher = daemons("matcher", "matcher", "--instance", "m-0", "--http-port", "0", environ=patient).start()
    alerter = daemons("alerter", "alerter", "--http-port", "0", environ=patient).start()
    producer = Producer(work, workers[0].env, rate=1500)  # about 45 s: the kill lands while the attack goes on

    def cross_key_matches(records):
        return any(r.key == b"matcher-m-0" and len(SliBatch.decode(r.value).edges) for r in records)

    assert cross_key_matches(read_topic(kafka.bootstrap, topics.sli_buckets, until=cross_key_matches,
                                        timeout_s=120)), matcher.log()[-3000:]
    matcher.kill()
    assert producer.process.poll() is None  # mid-stream
    matcher.start()
    producer.wait(timeout=180)

    everyone = (*workers, matcher, alerter)
    assert_like_oracle(kafka, topics.alerts, expected, lambda: [d.log()[-3000:] for d in everyone])
    rebuilt = re.findall(r"rebuilt up to \S+ in [0-9.]+ s: (\d+) queries indexed", matcher.log())
    assert len(rebuilt) == 1 and int(rebuilt[0]) > 0, matcher.log()[-3000:]
    replay_near = sorted(d["event_id"] for d in map(orjson.loads, (work / "suspicious.jsonl").read_bytes().splitlines())
                         if d["reason"] == "near-duplicate")
    near = read_topic(kafka.bootstrap, topics.suspicious_inputs, timeout_s=60,
                      until=lambda rs: len(near_duplicates(rs)) >= len(replay_near))
    assert len(replay_near) > 100 and sorted(near_duplicates(near)) == replay_near  # none lost, none twice
    requests = read_topic(kafka.bootstrap, topics.match_requests, timeout_s=30,
                          until=lambda rs: {MatchRequestBatch.decode(r.value).instance for r in rs} >= {"ingest-0",
                                                                                                      "ingest-1"})
    assert {MatchRequestBatch.decode(r.value).instance for r in requests} == {"ingest-0", "ingest-1"}
    assert committed_events(kafka, topics.sli_buckets, valid) == valid
    assert_committed_past_what_it_read(kafka, f"{prefix}advmon-alerter", topics.sli_buckets, 1)
    assert all(d.terminate() == 0 for d in everyone)
    assert "Traceback" not in "".join(d.log() for d in everyone)
    counted, margins, senders = margins_shared(kafka, topics, work)  # stopped by SIGTERM: every margin, once
    assert counted == margins and senders == 2


def test_realistic_records_through_three_workers_and_two_sharded_alerters_one_killed(kafka, prefix, daemons,
                                                                                      realistic_traffic, tmp_path):
    """Issue 17's checks on traffic this project's demo did not generate (a scenario family with 179 clients,
    popular inputs that benign clients repeat, white-box and spread black-box attacks): three ingest workers on
    six partitions with the matcher, and the alerter sharded over three partitions (the model stage and two client
    shards) between two alerters. One alerter is killed with SIGKILL mid-stream and stays down: its partitions move
    to the survivor, which rebuilds them from the changelog. Replay's pages come with the same alert ids and its
    tickets within 300 s, every event is counted once, and no transition is delivered twice."""
    work, expected, _, valid = realistic_traffic
    assert sum(a.severity == "page" for a in expected.values()) >= 3
    topics = Topics.from_settings(Settings(topic_prefix=prefix))
    create_topics(kafka.bootstrap, topics.specs(input_partitions=6, alerter_partitions=3))
    patient = {"ADVMON_IDLE_SOURCE_SECONDS": "15", "ADVMON_ALERTER_PARTITIONS": "3",
               "ADVMON_ALERTER_SESSION_TIMEOUT_SECONDS": "10"}
    workers = [daemons(f"ingest-{i}", "ingest", "--instance", f"ingest-{i}", "--remote-matching", "--profile",
                       str(work / "profile.npz"), "--http-port", "0", environ=patient).start() for i in range(3)]
    matcher = daemons("matcher", "matcher", "--instance", "m-0", "--http-port", "0", environ=patient).start()
    alerters = [daemons(f"alerter-{i}", "alerter", "--instance", f"a-{i}", "--http-port", "0", "--alerts-out",
                        str(tmp_path / f"delivered-{i}.jsonl"), environ=patient).start() for i in range(2)]

    def owned(alerter):
        return {int(p) for p in re.findall(r"alerter resumes \S+ partition (\d+)", alerter.log_path.read_text())}

    producer = Producer(work, workers[0].env, rate=1000)  # about 40 s: the kill lands mid-stream
    deadline = time.monotonic() + 60
    while not (owned(alerters[0]) and owned(alerters[1])) and time.monotonic() < deadline:
        time.sleep(0.5)  # the group has settled: each alerter applies messages of its partitions
    killed, survivor = alerters
    assert owned(killed) and owned(survivor), [a.log()[-3000:] for a in alerters]
    killed.kill()
    assert producer.process.poll() is None, "the stream should still be flowing when the alerter is killed"
    producer.wait(timeout=180)

    everyone = (*workers, matcher, *alerters)

    def context():
        """What a failure needs first: who holds which partition, the alerters' hand-overs, then the logs' tails."""
        # hand-overs, resumptions, and a stuck rebalance with its agents' tracebacks (File ..., await ...)
        wanted = r"resumes|hands over|read from the broker|rebuilt|rebalance has lasted|File |await "
        hand_overs = {a.log_path.name: [line for line in a.log_path.read_text(errors="replace").splitlines()
                                        if re.search(wanted, line)][-40:]
                      for a in alerters}
        return f"survivor owns {sorted(owned(survivor))}; {hand_overs}; " + str([d.log()[-2000:] for d in everyone])

    alerts = assert_like_oracle(kafka, topics.alerts, expected, context, timeout_s=300)
    assert committed_events(kafka, topics.sli_buckets, valid) == valid
    assert owned(survivor) == {0, 1, 2}, survivor.log()[-3000:]  # it took the killed alerter's partitions over
    assert_committed_past_what_it_read(kafka, f"{prefix}advmon-alerter", topics.sli_buckets, 3)
    published = {a["alert_id"] for a in alerts}
    delivered: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        delivered = [orjson.loads(line)["alert_id"] for i in range(2) if (tmp_path / f"delivered-{i}.jsonl").exists()
                     for line in (tmp_path / f"delivered-{i}.jsonl").read_bytes().splitlines()]
        if published <= set(delivered):
            break
        time.sleep(1)
    assert published <= set(delivered)  # every transition published was delivered
    assert len(delivered) == len(set(delivered)), "an alert transition was delivered twice"
    assert all(d.terminate() == 0 for d in (*workers, matcher, survivor))
    assert "Traceback" not in "".join(d.log() for d in everyone)


def near_duplicates(records):
    return [d["event_id"] for d in alerts_on(records) if d["reason"] == "near-duplicate"]
