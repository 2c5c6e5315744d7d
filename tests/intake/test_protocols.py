"""Serving protocols' bodies as the event contract: what each output shape means, and clear refusals."""

import pytest

from monitor.detect.parsing import parse_batch
from monitor.intake.protocols import ProtocolError, call_records, prediction_of, rows_v1, rows_v2


def test_outputs_become_probabilities_logits_or_labels():
    assert prediction_of([0.25, 0.75]) == {"label": 1, "confidence": 0.75, "probs": [0.25, 0.75]}
    logits = prediction_of([2.0, -1.0, 0.5])
    assert logits["label"] == 0 and logits["logits"] == [2.0, -1.0, 0.5] and 0.7 < logits["confidence"] < 0.8
    assert prediction_of("cat") == {"label": "cat", "confidence": 1.0}
    assert prediction_of(0.2)["label"] == 0 and prediction_of(0.2)["confidence"] == 0.8
    assert prediction_of({"label": "spam", "scores": [0.1, 0.9]})["probs"] == [0.1, 0.9]
    for nothing in (None, True, [], {"x": 1}):
        with pytest.raises(ProtocolError):
            prediction_of(nothing)


def test_v2_tensors_split_by_rows_and_text_inputs():
    request = {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["good film", "bad film"]}]}
    response = {"outputs": [{"name": "p", "shape": [2, 2], "datatype": "FP32", "data": [[0.1, 0.9], [0.8, 0.2]]}]}
    rows = rows_v2(request, response)
    assert [r[0] for r in rows] == [{"text": "good film"}, {"text": "bad film"}]
    assert [r[1]["label"] for r in rows] == [1, 0]
    images = {"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    labels = {"outputs": [{"name": "y", "shape": [1], "datatype": "INT64", "data": [7]}]}
    assert rows_v2(images, labels) == [({"features": [1.0, 2.0, 3.0, 4.0]}, {"label": 7, "confidence": 1.0})]


def test_mismatched_rows_and_missing_fields_are_refused_with_reasons():
    with pytest.raises(ProtocolError, match="2 instances but 1 predictions"):
        rows_v1({"instances": [[1], [2]]}, {"predictions": [0]})
    with pytest.raises(ProtocolError, match="no predictions or outputs list"):
        rows_v1({"instances": [[1]]}, {"error": "model failed"})
    with pytest.raises(ProtocolError, match="not a multiple of 2 rows"):
        rows_v2({"inputs": [{"shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
                {"outputs": [{"shape": [2], "datatype": "INT64", "data": [1, 2]}]})


def test_call_records_are_valid_events():
    records = call_records({"instances": [[0.1, 0.2], [0.3, 0.4]]}, {"predictions": [1, 0]}, call_id="c",
                           ts="2026-12-03T10:00:00Z", client_id="key", model="m", tags={"source": "test"})
    parsed = parse_batch(records)
    assert not parsed.dead and list(parsed.batch.event_id) == ["c-0", "c-1"]
