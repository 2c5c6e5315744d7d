"""``advmon collect`` on the real broker: event batches and KServe inference-logger CloudEvents reach
``inference-logs`` keyed by client, rejects reach the dead-letter topic with their reason, and the HTTP
guards (bearer token, body limit) answer as documented."""

import asyncio
import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest

from monitor.contracts.dead_letters import DeadLetter
from monitor.detect.parsing import parse_batch
from monitor.intake.kserve import REQUEST, RESPONSE
from monitor.settings import Settings
from monitor.telemetry.metrics import Metrics
from streams.broker import free_port
from streams.collect import Collector, serve
from tests.streams.conftest import read_topic
from tests.streams.test_kafka_e2e import topics_for

TOKEN = "s3cret-token"


@pytest.fixture
def collect(kafka, prefix):
    topics = topics_for(kafka, prefix)
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix)
    collector = Collector(settings, Metrics(), TOKEN, pair_ttl_s=2.0)
    port, stop, loop = free_port(), None, asyncio.new_event_loop()

    def run():
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        loop.run_until_complete(serve(collector, "127.0.0.1", port, max_body_bytes=64 * 1024, stop=stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url, topics
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=30)


def post(url, body, headers=None, token=TOKEN):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def event(i, client):
    return {"event_id": f"e{i}", "ts": time.time(), "client_id": client, "model": "digits",
            "prediction": {"label": i % 3, "confidence": 0.8}, "input": {"features": [0.1 * i, 0.2]}}


def test_event_batches_and_kserve_calls_reach_the_topics(collect, kafka):
    url, topics = collect
    lines = b"\n".join(orjson.dumps(event(i, f"key-{i % 2}")) for i in range(3))
    bad = orjson.dumps({**event(9, "key-0"), "prediction": {"label": 1, "confidence": 3}})
    status, answer = post(f"{url}/v1/events", lines + b"\n" + bad)
    assert status == 200 and answer["accepted"] == 3 and answer["rejected"] == 1
    assert answer["errors"][0]["reason"] == "invalid event: prediction.confidence: Expected `float` <= 1.0"
    status, answer = post(f"{url}/v1/events", orjson.dumps([event(5, "key-5")]))
    assert (status, answer["accepted"]) == (200, 1)

    head = {"ce-id": "call-1", "ce-specversion": "1.0", "ce-source": "http://digits-predictor",
            "ce-time": "2026-12-03T10:00:00Z", "ce-inferenceservicename": "digits", "ce-namespace": "ml",
            "ce-metadata": '{"X-Client-Id": ["key-kserve"]}'}
    status, answer = post(f"{url}/v1/kserve", b'{"instances": [[0.1, 0.2], [0.3, 0.4]]}',
                          {**head, "ce-type": REQUEST})
    assert (status, answer["accepted"], answer["pending"]) == (202, 0, 1)
    status, answer = post(f"{url}/v1/kserve", b'{"predictions": [[0.9, 0.1], [0.3, 0.7]]}',
                          {**head, "ce-type": RESPONSE})
    assert (status, answer["accepted"], answer["pending"]) == (202, 2, 0)
    # a request whose response never comes is dead-lettered after the pairing time limit, not lost
    post(f"{url}/v1/kserve", b'{"instances": [[1.0]]}', {**head, "ce-id": "call-2", "ce-type": REQUEST})

    logs = read_topic(kafka.bootstrap, topics.inference_logs, until=lambda r: len(r) >= 6, timeout_s=20)
    assert len(logs) == 6 and all(r.key.decode() == orjson.loads(r.value)["client_id"] for r in logs)
    parsed = parse_batch([r.value for r in logs])
    assert not parsed.dead  # what collect produced is what ingest accepts
    kserve = sorted(r.value for r in logs if orjson.loads(r.value)["client_id"] == "key-kserve")
    docs = [orjson.loads(v) for v in kserve]
    assert [d["event_id"] for d in docs] == ["call-1-0", "call-1-1"]
    assert [d["prediction"]["label"] for d in docs] == [0, 1] and docs[0]["tags"]["namespace"] == "ml"
    dead = read_topic(kafka.bootstrap, topics.dead_letters, until=lambda r: len(r) >= 2, timeout_s=20)
    reasons = sorted(DeadLetter.from_json(r.value).reason for r in dead)
    assert reasons[0].startswith("invalid event: prediction.confidence")
    assert reasons[1] == "kserve: no response within 2 s for CloudEvent id call-2"
    assert DeadLetter.from_json(dead[0].value).raw in (bad, b'{"instances": [[1.0]]}')


def test_token_and_body_limit_are_enforced(collect):
    url, _ = collect
    status, answer = post(f"{url}/v1/events", orjson.dumps([event(1, "k")]), token=None)
    assert status == 401 and "bearer token" in answer["error"]
    status, _ = post(f"{url}/v1/events", orjson.dumps([event(1, "k")]), token="wrong")
    assert status == 401
    status, _ = post(f"{url}/v1/events", b"[" + b",".join([orjson.dumps(event(1, "k"))] * 1000) + b"]")
    assert status == 413
    status, answer = post(f"{url}/v1/kserve", b'{"instances": []}', {"ce-type": REQUEST})
    assert status == 200 and answer["rejected"] == 1 and "no ce-id" in answer["errors"][0]["reason"]
