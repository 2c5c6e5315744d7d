"""KServe's inference logger: CloudEvents over HTTP, a request and a response per inference call, joined
by their CloudEvent id into the event contract's records (one per row of the call).

The logger posts each half on its own (``Ce-Type: org.kubeflow.serving.inference.request`` / ``.response``,
binary mode; structured ``application/cloudevents+json`` is read too). Who called is not in the body:
list the header that names the client in the InferenceService's ``logger.metadataHeaders`` (default
``X-Client-Id``); KServe forwards it in the ``metadata`` extension. A half that waits longer than
``ttl_s`` for its partner, or a call advmon cannot read, becomes a dead letter with its reason. Event
time is the request's ``ce-time`` (its arrival here where the logger sets none).

>>> pairs = KServePairs()
>>> head = {"ce-id": "c1", "ce-type": REQUEST, "ce-source": "s", "ce-time": "2026-11-25T10:00:00Z",
...         "ce-inferenceservicename": "digits", "ce-metadata": '{"X-Client-Id": ["key-7"]}'}
>>> pairs.add(cloud_event(head, b'{"instances": [[0.5, 1.0]]}'), now=0.0)
([], [])
>>> records, dead = pairs.add(cloud_event({**head, "ce-type": RESPONSE}, b'{"predictions": [[0.2, 0.8]]}'), now=0.1)
>>> orjson.loads(records[0])["client_id"], orjson.loads(records[0])["prediction"]["label"], dead
('key-7', 1, [])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.intake.protocols import ProtocolError, call_records

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
STRUCTURED = "application/cloudevents+json"


@dataclass(frozen=True)
class CloudEvent:
    id: str
    type: str
    data: Any
    raw: bytes
    attributes: dict[str, Any] = field(default_factory=dict)  # time, source and extensions, lower-case names


def cloud_event(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP request, binary or structured mode; raises :class:`ProtocolError`."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        document = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the CloudEvent's data is not JSON: {exc}") from None
    if lower.get("content-type", "").split(";")[0].strip() == STRUCTURED:
        if not isinstance(document, dict):
            raise ProtocolError("a structured CloudEvent must be a JSON object")
        attributes = {k.lower(): v for k, v in document.items() if k != "data"}
        data = document.get("data")
    else:
        attributes = {k[3:]: v for k, v in lower.items() if k.startswith("ce-")}
        data = document
    if not attributes.get("id") or not attributes.get("type"):
        raise ProtocolError("not a CloudEvent: no ce-id or ce-type")
    return CloudEvent(str(attributes["id"]), str(attributes["type"]), data, body, attributes)


@dataclass
class _Half:
    event: CloudEvent
    arrived: float


class KServePairs:
    """Requests and responses of the inference logger, joined by CloudEvent id (bounded, with a time limit)."""

    def __init__(self, client_header: str = "X-Client-Id", ttl_s: float = 60.0, max_pending: int = 10_000) -> None:
        self.client_header = client_header.lower()
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: OrderedDict[str, _Half] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, event: CloudEvent, now: float) -> tuple[list[bytes], list[tuple[str, bytes]]]:
        """The records of a completed call, and dead letters (reason, raw bytes), after this half arrived."""
        if event.type not in (REQUEST, RESPONSE):
            return [], [(f"kserve: CloudEvent type {event.type!r} is not an inference request or response",
                         event.raw)]
        dead = self.expire(now)
        other = self._pending.pop(event.id, None)
        if other is None or other.event.type == event.type:
            if other is not None:
                dead.append((f"kserve: a second {event.type.rsplit('.', 1)[-1]} for CloudEvent id {event.id}",
                             other.event.raw))
            self._pending[event.id] = _Half(event, now)
            while len(self._pending) > self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                dead.append((f"kserve: over {self.max_pending} calls waiting for their other half", oldest.event.raw))
            return [], dead
        request, response = (other.event, event) if event.type == RESPONSE else (event, other.event)
        try:
            return self._records(request, response, now), dead
        except ProtocolError as exc:
            return [], [*dead, (f"kserve: {exc}", request.raw), (f"kserve: {exc}", response.raw)]

    def expire(self, now: float) -> list[tuple[str, bytes]]:
        """Halves that waited ``ttl_s`` for their partner, as dead letters."""
        dead = []
        while self._pending:
            key, half = next(iter(self._pending.items()))
            if now - half.arrived < self.ttl_s:
                break
            del self._pending[key]
            missing = "response" if half.event.type == REQUEST else "request"
            dead.append((f"kserve: no {missing} within {self.ttl_s:g} s for CloudEvent id {key}", half.event.raw))
        return dead

    def _records(self, request: CloudEvent, response: CloudEvent, now: float) -> list[bytes]:
        client = self._client(request) or self._client(response)
        if not client:
            raise ProtocolError(f"no client id: add {self.client_header} to the InferenceService's "
                                "logger.metadataHeaders")
        model = (request.attributes.get("inferenceservicename")
                 or (response.data.get("model_name") if isinstance(response.data, dict) else None) or "unknown")
        ts = request.attributes.get("time") or response.attributes.get("time") or now  # no ce-time: arrival
        tags = {"source": "kserve"}
        for name in ("namespace", "component", "endpoint"):
            if request.attributes.get(name):
                tags[name] = str(request.attributes[name])
        return call_records(request.data, response.data, call_id=request.id, ts=ts, client_id=client,
                            model=str(model), tags=tags)

    def _client(self, event: CloudEvent) -> str | None:
        metadata = event.attributes.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = orjson.loads(metadata)
            except orjson.JSONDecodeError:
                return None
        if not isinstance(metadata, dict):
            return None
        for name, values in metadata.items():
            if name.lower() == self.client_header:
                value = values[0] if isinstance(values, list) and values else values
                return str(value) if value else None
        return None
