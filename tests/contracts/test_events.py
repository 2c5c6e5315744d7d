"""The event contract's JSON Schema (``advmon schema events``) agrees with the decoder at the edge."""

import base64

import jsonschema
import numpy as np
import orjson
import pytest

from monitor.cli import main
from monitor.contracts.events import event_json_schema, validate_event

GOOD = {"event_id": "e1", "ts": "2026-11-25T10:00:00Z", "client_id": "key_1", "model": "m",
        "input": {"features": [0.5, 1], "embedding": {"b64": base64.b64encode(np.ones(2, "<f4").tobytes()).decode()}},
        "prediction": {"label": 3, "confidence": 0.9, "logits": [1.0, -2]}, "tags": {"traffic": "canary"}}


@pytest.mark.parametrize("change", [
    {}, {"ts": 1795600800.5}, {"ground_truth": "3", "model_version": 2}, {"input": None}, {"unknown": [1, {"x": 2}]},
])
def test_schema_accepts_what_the_decoder_accepts(change):
    record = {**GOOD, **change}
    validate_event(orjson.dumps(record))
    jsonschema.validate(record, event_json_schema())


@pytest.mark.parametrize("change", [
    {"event_id": ""}, {"ts": -1}, {"prediction": {"label": "1", "confidence": 1.5}},
    {"prediction": {"label": True, "confidence": 0.5}}, {"input": {"features": [1, "x"]}}, {"input": {"features": []}},
    {"tags": {"traffic": 1}},
])
def test_schema_rejects_what_the_decoder_rejects(change):
    record = {**GOOD, **change}
    with pytest.raises(ValueError):
        validate_event(orjson.dumps(record))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record, event_json_schema())


def test_schema_command_prints_the_contract(capsys):
    assert main(["schema", "events"]) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == orjson.loads(orjson.dumps(event_json_schema()))
    assert printed["$defs"]["InferenceEvent"]["required"] == ["event_id", "ts", "client_id", "prediction"]
