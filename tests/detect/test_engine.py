"""The engine on hostile input, fuzzed with hypothesis: it takes whatever the parser lets through and
counts every event once; plus the named hard cases (infinities, bad unicode, huge vectors)."""

import base64

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.detect.engine import Engine, EngineSettings
from monitor.detect.parsing import parse_batch, validate_record

finite = st.floats(0, 1, allow_nan=False, width=32)
valid_events = st.builds(
    lambda i, ts, client, model, label, conf, dim, fill, emb_dim, canary: orjson.dumps({
        "event_id": f"e{i}", "ts": ts, "client_id": client, "model": model,
        "prediction": {"label": label, "confidence": conf},
        "input": {**({"features": [fill] * dim} if dim else {}),
                  **({"embedding": [fill - 0.5] * emb_dim} if emb_dim else {})},
        **({"tags": {"traffic": canary}} if canary else {}),
    }),
    st.integers(0, 10**9), st.floats(0, 4e9, allow_nan=False), st.text(min_size=1, max_size=6), st.text(max_size=6),
    st.text(max_size=4) | st.integers(0, 20), finite, st.sampled_from([0, 1, 5, 16, 64, 300]), finite,
    st.sampled_from([0, 1, 3, 32]), st.sampled_from([None, "canary-adversarial", "canary-benign", "other"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(valid_events, min_size=1, max_size=30), min_size=1, max_size=4))
def test_engine_counts_every_accepted_event_once(batches):
    engine = Engine(EngineSettings(fingerprint_secret=b"fuzz", fingerprint_generation_queries=100))
    accepted = counted = 0
    for records in batches:
        parsed = parse_batch(records)
        accepted += len(parsed.batch)
        result = engine.process(parsed.batch)
        counted += int(result.rows.column("events").sum())
        assert np.isfinite(result.rows.values).all()
        entropy = result.rows.entropy_bits("label")
        assert ((entropy[np.isfinite(entropy)] >= 0) & (entropy[np.isfinite(entropy)] <= 3 + 1e-9)).all()
    assert counted == accepted


def doc(**fields):
    base = {"event_id": "e", "ts": 1, "client_id": "c", "prediction": {"label": "1", "confidence": 0.5}}
    return {**base, **fields}


@pytest.mark.parametrize("raw, reason", [
    (b'{"event_id":"e","ts":1e999,"client_id":"c","prediction":{"label":"1","confidence":0.5}}',
     "invalid event: ts: Number out of range"),
    (b'{"event_id":"e","ts":1,"client_id":"c","prediction":{"label":"1","confidence":-1e400}}',
     "invalid event: prediction.confidence: Number out of range"),
    (b'{"event_id":"\\ud800","ts":1,"client_id":"c","prediction":{"label":"1","confidence":0.5}}', "invalid JSON"),
    (b'{"event_id":"e","ts":1,"client_id":"\xff\xfe","prediction":{"label":"1","confidence":0.5}}', "invalid JSON"),
    (orjson.dumps(doc(input={"features": [1e308, 1e308]})), None),  # finite: accepted, then clipped by quantization
    (orjson.dumps(doc(ts=1e300)), "invalid event: ts"),
    (orjson.dumps(doc(input={"embedding": {"b64": base64.b64encode(np.zeros(70_000, np.float32).tobytes()).decode(),
                                           "dtype": "float32"}})), "invalid event: input.embedding"),
    (orjson.dumps(doc(client_id="\u202e\u0000key")), None),  # control characters are data, not errors
])
def test_hard_cases_are_named_or_accepted(raw, reason):
    result = validate_record(raw, max_bytes=1 << 20)
    if reason is None:
        assert not isinstance(result, str), result
    else:
        assert isinstance(result, str) and result.startswith(reason), result


def test_margin_counts_go_to_the_other_workers_once_a_minute_has_closed_every_event_once():
    """What the engine's traffic taught the margin population is held per minute and released (for margin-counts)
    once the watermark has passed the minute's end and the grace period; a late event's count goes with the next
    batch, and ``finish`` releases the open minutes. Canaries and events without logits are not counted."""
    rng = np.random.default_rng(0)
    settings = EngineSettings(fingerprint_secret=b"t")

    def event(i, ts, traffic=None, logits=True):
        return orjson.dumps({"event_id": f"e{i}", "ts": ts, "client_id": f"c{i % 5}", "model": "m",
                             "prediction": {"label": str(i % 3), "confidence": 0.9,
                                            **({"logits": rng.normal(0, 2, 3).tolist()} if logits else {})},
                             **({"tags": {"traffic": traffic}} if traffic else {})})

    engine, released, counted = Engine(settings), [], 0
    for minute in range(6):
        records = [event(100 * minute + i, 60.0 * minute + i / 2) for i in range(100)]
        records += [event(900 + minute, 60.0 * minute, "canary-benign"),
                    event(950 + minute, 60.0 * minute, logits=False)]
        if minute == 5:
            records.append(event(999, 30.0))  # late: its minute was released long ago
        counted += len(records) - 2
        result = engine.process(parse_batch(records).batch)
        for part in result.margin_counts:
            late = part.bucket == 0
            assert (part.bucket[~late] + settings.bucket_s + settings.grace_s <= result.watermark).all()
        released += result.margin_counts
    before_finish = sum(float(p.count.sum()) for p in released)
    assert 0 < before_finish < counted and {p.model for p in released} == {"m"}
    released += engine.finish().margin_counts
    assert sum(float(p.count.sum()) for p in released) == counted
