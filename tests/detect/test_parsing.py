"""Edge validation: every record ends in the batch or in the dead letters, with a precise reason."""

import base64
import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.contracts.dead_letters import DeadLetter
from monitor.contracts.events import validate_event
from monitor.detect.parsing import iter_lines, parse_batch, validate_record


def event(**overrides):
    doc = {"event_id": "e1", "ts": "2026-11-25T10:00:00.123Z", "client_id": "key_1", "model": "digits-mlp",
           "prediction": {"label": "7", "confidence": 0.93}}
    doc.update(overrides)
    return orjson.dumps(doc)


def test_contract_example_parses_with_all_fields():
    emb = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    raw = event(
        model_version=3,
        input={
            "features": [0.0, 0.25],
            "text": "hi",
            "embedding": {"b64": base64.b64encode(emb.tobytes()).decode(), "dtype": "float32"},
        },
        prediction={"label": 7, "confidence": 1, "probs": [0.1, 0.9], "logits": [-1, 2]},
        ground_truth="7",
        tags={"traffic": "canary-adversarial"},
        future_field={"kept": True},
    )
    e = validate_record(raw)
    assert not isinstance(e, str), e
    assert e.ts[0] == pytest.approx(1795600800.123)
    assert e.label.tolist() == ["7"] and e.ground_truth.tolist() == ["7"] and e.is_correct.tolist() == [True]
    assert e.embedding_groups()[3][1].tolist() == [emb.tolist()]
    assert e.feature_groups()[2][1].tolist() == [[0.0, 0.25]] and e.texts[1] == []  # text with features: not text
    assert e.logit_groups()[2][1].tolist() == [[-1.0, 2.0]] and e.margin[0] == pytest.approx(np.tanh(1.5))  # logits win
    assert e.is_adversarial_canary.tolist() == [True] and e.is_canary.tolist() == [True]
    assert validate_event(raw).input.text == "hi"  # unknown fields are accepted and ignored


def test_float16_embedding_and_epoch_seconds():
    emb = np.array([1.5, -2.0], dtype="<f2")
    e = validate_record(event(ts=1795600800, input={"embedding": {"b64": base64.b64encode(emb.tobytes()).decode(),
                                                                   "dtype": "float16"}}))
    assert e.ts.tolist() == [1795600800.0] and e.embedding_groups()[2][1].tolist() == [[1.5, -2.0]]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{oops", "invalid JSON"),
        (b"[1, 2]", "invalid event: record: Expected `object`, got `array`"),
        (event(ts="2026-11-25T10:00:00"), "invalid event: ts: Expected `datetime` with a timezone component"),
        (event(ts="yesterday"), "invalid event: ts: Invalid RFC3339 encoded datetime"),
        (event(ts=-1), "invalid event: ts: Expected `float` >= 0.0"),
        (event(client_id=""), "invalid event: client_id: Expected `str` of length >= 1"),
        (
            event(prediction={"label": "1", "confidence": 1.5}),
            "invalid event: prediction.confidence: Expected `float` <= 1.0",
        ),
        (event(prediction={"label": "1"}), "invalid event: prediction: Object missing required field `confidence`"),
        (b'{"event_id":"a","ts":1,"client_id":"c","prediction":{"label":"1","confidence":NaN}}', "invalid JSON"),
        (
            event(prediction={"label": True, "confidence": 0.5}),
            "invalid event: prediction.label: Expected `int | str`, got `bool`",
        ),
        (event(input={"features": [1, "x"]}), "invalid event: input.features.1: Expected `float`, got `str`"),
        (event(input={"features": [1.0, True]}), "invalid event: input.features.1: Expected `float`, got `bool`"),
        (event(input={"features": [[1.0]]}), "invalid event: input.features.0: Expected `float`, got `array`"),
        (event(input={"features": []}), "invalid event: input.features: Expected `array` of length >= 1"),
        (event(input={"embedding": [1, "x"]}), "invalid event: input.embedding.1: Expected `float`, got `str`"),
        (event(input={"embedding": {"b64": "AAA", "dtype": "float32"}}),
         "invalid event: input.embedding.b64: Invalid base64 encoded string"),
        (event(input={"embedding": {"b64": "AACA", "dtype": "float32"}}),
         "invalid event: input.embedding.b64: 3 bytes, not a whole number of float32 values"),
        (event(input={"embedding": {"b64": "AACAfw==", "dtype": "float32"}}),
         "invalid event: input.embedding: must contain only finite numbers"),
        (event(event_id=None), "invalid event: event_id: Expected `str`, got `null`"),
    ],
)
def test_rejections_name_the_field(raw, reason):
    result = validate_record(raw)
    assert isinstance(result, str) and result.startswith(reason), result


def test_missing_prediction_and_ids_listed_together():
    result = validate_record(b'{"ts": 1}')
    assert result == "invalid event: missing required fields event_id, client_id, prediction"


def test_oversized_record_rejected_before_parsing():
    result = validate_record(event(input={"features": [0.5] * 100}), max_bytes=300)
    assert result.startswith("record too large")


def test_vector_length_is_bounded():
    result = validate_record(event(input={"features": [0.0] * 70_000}), max_bytes=10 << 20)
    assert "input.features: Expected `array` of length <= 65536" in result


def test_dead_letter_keeps_original_bytes_and_source(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(event() + b"\n\n{bad\n" + event(event_id="e2") + b"\n")
    batches = list(iter_lines(str(path), batch_size=2))
    records = [r for rs, _ in batches for r in rs]
    sources = [s for _, ss in batches for s in ss]
    parsed = parse_batch(records, sources)
    assert len(parsed.batch) == 2
    [dead] = parsed.dead
    assert dead.raw == b"{bad" and dead.source == f"{path}:3" and dead.category == "invalid JSON"
    assert DeadLetter.from_json(dead.to_json()) == dead


def dump(value) -> bytes:
    """The stdlib encoder: unlike orjson it writes integers beyond 64 bits, which hostile clients send."""
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
near_events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": json_values,
        "ts": json_values | st.just("2026-11-25T10:00:00Z"),
        "client_id": json_values,
        "model": json_values,
        "prediction": st.fixed_dictionaries(
            {},
            optional={
                "label": json_values,
                "confidence": json_values | st.floats(0, 1),
                "probs": json_values,
                "logits": json_values,
            },
        ),
        "input": st.fixed_dictionaries(
            {},
            optional={
                "features": json_values,
                "embedding": json_values
                | st.fixed_dictionaries(
                    {"b64": st.text(max_size=12), "dtype": st.sampled_from(["float32", "float16", "int8"])}
                ),
                "text": json_values,
            },
        ),
        "tags": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200) | near_events.map(dump) | json_values.map(dump), max_size=20))
def test_garbage_never_raises_and_nothing_is_lost(records):
    parsed = parse_batch(records)
    assert parsed.total == len(records)
    assert all(d.reason and d.raw in records for d in parsed.dead)
    assert len(parsed.valid) == len(parsed.batch) and (np.diff(parsed.valid) > 0).all()
    b = parsed.batch
    assert all(b.event_id) and all(b.client_id) and np.isfinite(b.ts).all()
    assert ((0 <= b.confidence) & (b.confidence <= 1)).all()
    for groups in (b.feature_groups(), b.embedding_groups(), b.logit_groups()):
        assert all(np.isfinite(m).all() and len(r) == len(m) for r, m in groups.values())


def test_batch_rows_line_up_with_records_around_rejections():
    records = [event(event_id="a"), b"{bad", event(event_id="b", input={"embedding": {"b64": "AAA"}}),
               event(event_id="c", input={"features": [1, 2]}), event(event_id="d", ts=9e9)]
    parsed = parse_batch(records, not_after=2e9)
    assert parsed.batch.event_id.tolist() == ["a", "c"] and parsed.valid.tolist() == [0, 3]
    assert parsed.batch.feature_groups()[2][0].tolist() == [1]
    assert [d.reason.split(":")[0] for d in parsed.dead] == ["invalid JSON", "invalid event", "ts in the future"]
