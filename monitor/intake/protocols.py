"""Model inputs and outputs of the common serving protocols, row by row, as the event contract's fields.

KServe's V1 protocol (``{"instances": [...]}`` -> ``{"predictions": [...]}``) and the Open Inference Protocol
(V2: ``{"inputs": [tensor]}`` -> ``{"outputs": [tensor]}``, spoken by KServe, MLServer, Seldon Core 2 and
Triton). A row's input becomes ``features`` (numbers, flattened) or ``text``; its output becomes the
prediction: a probability vector (label = argmax, confidence = max), logits (softmax), or a bare label
(confidence 1: the model said nothing more).

>>> for row in rows_v1({"instances": [[0.1, 0.2], [0.3, 0.4]]}, {"predictions": [[0.9, 0.1], [0.2, 0.8]]}):
...     print(row)
({'features': [0.1, 0.2]}, {'label': 0, 'confidence': 0.9, 'probs': [0.9, 0.1]})
({'features': [0.3, 0.4]}, {'label': 1, 'confidence': 0.8, 'probs': [0.2, 0.8]})
>>> request = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
>>> response = {"model_name": "m", "outputs": [{"name": "y", "shape": [2], "datatype": "INT64", "data": [3, 5]}]}
>>> [p for _, p in rows_v2(request, response)]
[{'label': 3, 'confidence': 1.0}, {'label': 5, 'confidence': 1.0}]
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from monitor.errors import AdvmonError


class ProtocolError(AdvmonError):
    """A request or response that does not say what advmon needs (the reason goes to the dead letters)."""


Row = tuple[dict[str, Any], dict[str, Any]]


def prediction_of(output: Any) -> dict[str, Any]:
    """The contract's ``prediction`` from one row of model output."""
    if isinstance(output, bool) or output is None:
        raise ProtocolError(f"a prediction of {type(output).__name__} says nothing")
    if isinstance(output, (int, str)):
        return {"label": output, "confidence": 1.0}
    if isinstance(output, float) and output.is_integer():
        return {"label": int(output), "confidence": 1.0}
    if isinstance(output, float) and 0.0 <= output <= 1.0:  # a binary classifier's positive-class probability
        return prediction_of([output])
    if isinstance(output, dict):  # {"label": ..., "probs"/"scores": [...]} as some custom predictors answer
        scores = output.get("probs") or output.get("scores") or output.get("probabilities")
        if scores is not None:
            return prediction_of(list(scores))
        if "label" in output:
            return prediction_of(output["label"])
        raise ProtocolError(f"a prediction object without label or scores: keys {sorted(output)[:5]}")
    if isinstance(output, list) and output and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in output):
        values = [float(v) for v in output]
        if len(values) == 1:  # a binary classifier's positive-class probability
            p = values[0]
            if 0.0 <= p <= 1.0:
                return {"label": int(p >= 0.5), "confidence": max(p, 1 - p), "probs": [1 - p, p]}
        if all(0.0 <= v <= 1.0 for v in values) and abs(sum(values) - 1.0) < 1e-3:
            best = max(range(len(values)), key=values.__getitem__)
            return {"label": best, "confidence": values[best], "probs": values}
        top = max(values)
        exp = [math.exp(v - top) for v in values]
        total = sum(exp)
        best = max(range(len(values)), key=values.__getitem__)
        return {"label": best, "confidence": exp[best] / total, "logits": values}
    raise ProtocolError(f"a prediction of {type(output).__name__} is neither a label nor scores")


def input_of(row: Any) -> dict[str, Any]:
    """The contract's ``input`` from one row of model input: text, or numbers flattened to ``features``."""
    if isinstance(row, str):
        return {"text": row}
    if isinstance(row, dict) and len(row) == 1:  # {"b64": ...} or a single named feature vector
        return input_of(next(iter(row.values())))
    flat = _flatten(row)
    if not flat:
        raise ProtocolError("an input row without numbers or text")
    return {"features": flat}


def _flatten(value: Any) -> list[float]:
    if isinstance(value, bool):
        raise ProtocolError("an input of booleans")
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, list):
        return [v for item in value for v in _flatten(item)]
    raise ProtocolError(f"an input of {type(value).__name__}")


def rows_v1(request: Any, response: Any) -> list[Row]:
    """KServe V1: ``instances`` (or ``inputs``) paired with ``predictions`` (or ``outputs``), row by row."""
    instances = _field(request, "instances", "inputs")
    predictions = _field(response, "predictions", "outputs")
    if len(instances) != len(predictions):
        raise ProtocolError(f"{len(instances)} instances but {len(predictions)} predictions")
    return [(input_of(x), prediction_of(y)) for x, y in zip(instances, predictions, strict=True)]


def _field(document: Any, *names: str) -> list:
    for name in names:
        if isinstance(document, dict) and isinstance(document.get(name), list):
            return document[name]
    raise ProtocolError(f"no {' or '.join(names)} list in the body")


def rows_v2(request: Any, response: Any) -> list[Row]:
    """Open Inference Protocol (V2): the first input tensor's rows with the first output tensor's rows."""
    inputs = _tensor_rows(_field(request, "inputs")[0], "input")
    outputs = _tensor_rows(_field(response, "outputs")[0], "output")
    if len(inputs) != len(outputs):
        raise ProtocolError(f"{len(inputs)} input rows but {len(outputs)} output rows")
    return [(input_of(x), prediction_of(y)) for x, y in zip(inputs, outputs, strict=True)]


def _tensor_rows(tensor: Any, what: str) -> list:
    """A V2 tensor's ``data`` split along its first dimension (data may be flat or nested)."""
    if not isinstance(tensor, dict) or "data" not in tensor:
        raise ProtocolError(f"the first {what} is not a V2 tensor with data")
    shape, data = tensor.get("shape") or [], tensor["data"]
    if tensor.get("datatype") == "BYTES":
        flat = data if isinstance(data, list) else [data]
        return [v if isinstance(v, str) else str(v) for v in flat]
    flat = _flatten(data) if isinstance(data, list) else [data]
    if tensor.get("datatype", "").startswith(("INT", "UINT")):
        flat = [int(v) for v in flat]
    rows = int(shape[0]) if shape else 1
    if rows <= 0 or len(flat) % rows:
        raise ProtocolError(f"the first {what} has {len(flat)} values, not a multiple of {rows} rows")
    width = len(flat) // rows
    if width == 1 and len(shape) <= 1:
        return flat
    return [flat[i * width:(i + 1) * width] for i in range(rows)]


def is_v2(document: Any) -> bool:
    """A V2 body: ``inputs``/``outputs`` hold tensors (objects with ``data``)."""
    for name in ("inputs", "outputs"):
        value = document.get(name) if isinstance(document, dict) else None
        if isinstance(value, list) and value and isinstance(value[0], dict) and "data" in value[0]:
            return True
    return False


def call_records(request: Any, response: Any, *, call_id: str, ts: str | float, client_id: str, model: str,
                 tags: dict[str, str]) -> list[bytes]:
    """The event contract's records of one inference call (V1 or V2 bodies), one per row, as JSON bytes;
    event ids are the call's id, suffixed ``-<row>`` when the call holds several rows."""
    rows = (rows_v2 if is_v2(request) or is_v2(response) else rows_v1)(request, response)
    return [orjson.dumps({"event_id": f"{call_id}-{i}" if len(rows) > 1 else call_id, "ts": ts,
                          "client_id": client_id, "model": model, "input": model_input, "prediction": prediction,
                          "tags": tags})
            for i, (model_input, prediction) in enumerate(rows)]
