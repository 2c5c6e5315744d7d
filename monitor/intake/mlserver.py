"""MLServer's and Seldon Core 2's Kafka records (Open Inference Protocol JSON) as the event contract's records.

MLServer's Kafka server reads V2 inference requests from one topic and writes the responses to another,
with the model in the ``mlserver-model`` header; Seldon Core 2 writes each model's requests and responses to
``seldon.<namespace>.model.<model>.inputs`` / ``.outputs`` (with ``--kafka-json`` / JSON encoding). A bridge
that joins a request and its response by the V2 ``id`` (both records carry it) hands them here. The client is
the ``x-client-id`` header (or the request's ``parameters.client_id``); event time is the request record's
Kafka timestamp.

>>> request = b'{"id": "r1", "parameters": {"client_id": "key-3"}, "inputs": [{"name": "x", "shape": [1, 3],' \\
...           b' "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}'
>>> response = b'{"id": "r1", "model_name": "iris", "outputs": [{"name": "p", "shape": [1, 3], "datatype": "FP32",' \\
...            b' "data": [0.1, 0.7, 0.2]}]}'
>>> [record] = mlserver_records(request, response, headers={}, timestamp_ms=1795600800000)
>>> doc = orjson.loads(record)
>>> doc["event_id"], doc["client_id"], doc["model"], doc["prediction"]["label"], doc["ts"]
('r1', 'key-3', 'iris', 1, 1795600800.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from monitor.intake.protocols import ProtocolError, call_records


def mlserver_records(request: bytes, response: bytes, headers: Mapping[str, bytes], timestamp_ms: int,
                     client_header: str = "x-client-id") -> list[bytes]:
    """The records of one request/response pair; raises :class:`ProtocolError` with the reason."""
    try:
        request_doc, response_doc = orjson.loads(request), orjson.loads(response)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not V2 JSON: {exc}") from None
    if not isinstance(request_doc, dict) or not isinstance(response_doc, dict):
        raise ProtocolError("a V2 request and response are JSON objects")
    lower = {k.lower(): v.decode(errors="replace") for k, v in headers.items()}
    client = lower.get(client_header.lower()) or (request_doc.get("parameters") or {}).get("client_id")
    if not client:
        raise ProtocolError(f"no client id: set the {client_header} header or parameters.client_id")
    model = lower.get("mlserver-model") or response_doc.get("model_name") or "unknown"
    call_id = str(request_doc.get("id") or response_doc.get("id") or "")
    if not call_id:
        raise ProtocolError("the request has no id to name its events by")
    return call_records(request_doc, response_doc, call_id=call_id, ts=timestamp_ms / 1000.0,
                        client_id=str(client), model=str(model), tags={"source": "mlserver"})
