"""KServe's inference logger halves joined into records; unpaired or unreadable halves become dead letters."""

import orjson
import pytest

from monitor.intake.kserve import REQUEST, RESPONSE, STRUCTURED, KServePairs, cloud_event
from monitor.intake.protocols import ProtocolError

META = '{"X-Client-Id": ["key-1"]}'


def half(kind, call="c1", body=b'{"instances": [[1.0, 2.0]]}', **extra):
    headers = {"Ce-Id": call, "Ce-Type": kind, "Ce-Source": "s", "Ce-Metadata": META, **extra}
    return cloud_event(headers, body)


def test_response_first_then_request_and_structured_mode():
    pairs = KServePairs()
    assert pairs.add(half(RESPONSE, body=b'{"predictions": [2]}'), now=0.0) == ([], [])
    structured = orjson.dumps({"specversion": "1.0", "id": "c1", "type": REQUEST, "source": "s",
                               "time": "2026-12-03T10:00:00Z", "metadata": META, "data": {"instances": [[1.0, 2.0]]}})
    records, dead = pairs.add(cloud_event({"Content-Type": STRUCTURED}, structured), now=1.0)
    [doc] = [orjson.loads(r) for r in records]
    assert dead == [] and doc["prediction"]["label"] == 2 and doc["ts"] == "2026-12-03T10:00:00Z"
    assert pairs.pending == 0


def test_unpaired_duplicate_and_overflowing_halves_are_dead_letters():
    pairs = KServePairs(ttl_s=10.0, max_pending=2)
    pairs.add(half(REQUEST, "a"), now=0.0)
    _, dead = pairs.add(half(REQUEST, "a"), now=1.0)
    assert [reason for reason, _ in dead] == ["kserve: a second request for CloudEvent id a"]
    pairs.add(half(REQUEST, "b"), now=2.0)
    _, dead = pairs.add(half(REQUEST, "c"), now=3.0)
    assert [reason for reason, _ in dead] == ["kserve: over 2 calls waiting for their other half"]
    assert [reason for reason, _ in pairs.expire(now=20.0)] == [
        "kserve: no response within 10 s for CloudEvent id b", "kserve: no response within 10 s for CloudEvent id c"]


def test_a_call_without_client_id_names_the_setting_to_change():
    pairs = KServePairs()
    pairs.add(cloud_event({"ce-id": "x", "ce-type": REQUEST}, b'{"instances": [[1.0]]}'), now=0.0)
    records, dead = pairs.add(cloud_event({"ce-id": "x", "ce-type": RESPONSE}, b'{"predictions": [1]}'), now=0.0)
    assert records == [] and len(dead) == 2
    assert dead[0][0] == "kserve: no client id: add x-client-id to the InferenceService's logger.metadataHeaders"


def test_not_a_cloud_event():
    with pytest.raises(ProtocolError, match="no ce-id or ce-type"):
        cloud_event({}, b"{}")
    with pytest.raises(ProtocolError, match="not JSON"):
        cloud_event({"ce-id": "1", "ce-type": REQUEST}, b"\x00")
