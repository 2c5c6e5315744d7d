"""The inference event contract (topic ``inference-logs``; JSON Lines for replay).

One record per inference, validated once at the edge, straight from the JSON bytes, by msgspec's compiled
decoder (strict types, bounds, RFC 3339 times; no Python runs per value): 2.6 us a realistic 1.3 KB
record against pydantic-core's 9.2 us (README, "Measured"). See ``design.md`` for the contract; this module is
its single executable definition (``advmon schema events`` prints it as JSON Schema). What a type cannot say
(base64 embeddings decode to whole finite numbers) is checked per batch in numpy (``monitor.detect.vectors``).

>>> record = validate_event(b'{"event_id": "e1", "ts": "2026-11-25T10:00:00.5Z", "client_id": "key_1",'
...     b' "model": "digits-mlp", "prediction": {"label": 7, "confidence": 0.9},'
...     b' "input": {"embedding": {"b64": "AACAPwAAAEA=", "dtype": "float32"}}}')
>>> epoch_seconds(record.ts), record.prediction.label, record.input.embedding.b64
(1795600800.5, 7, b'\\x00\\x00\\x80?\\x00\\x00\\x00@')
>>> validate_event(b'{"event_id": "e1", "ts": 1, "client_id": "c", "prediction": {"label": "1", "confidence": 2}}')
Traceback (most recent call last):
...
msgspec.ValidationError: Expected `float` <= 1.0 - at `$.prediction.confidence`
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

#: Bounds that keep one hostile record from costing unbounded memory or CPU.
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_VECTOR_LEN = 65_536
MAX_TEXT_CHARS = 100_000
MAX_TAGS = 64
MAX_EPOCH_S = 32_503_680_000  # year 3000

#: A flat list of numbers (ints accepted; bools, strings, NaN and out-of-range numbers rejected).
FiniteVector = Annotated[list[float], msgspec.Meta(min_length=1, max_length=MAX_VECTOR_LEN)]
#: Labels are strings on the wire; integer class ids are accepted (the batch holds them as strings).
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_CHARS)] | int
#: Event time: RFC 3339 text with a zone offset, or epoch seconds.
Timestamp = Annotated[float, msgspec.Meta(ge=0, lt=MAX_EPOCH_S)] | Annotated[datetime, msgspec.Meta(tz=True)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]


class EncodedEmbedding(msgspec.Struct, frozen=True, gc=False):  # gc=False: never in a cycle
    """A little-endian binary embedding: ``{"b64": ..., "dtype": "float32"|"float16"}``; ``b64`` holds the bytes,
    decoded from base64 by the validator."""

    b64: Annotated[bytes, msgspec.Meta(min_length=1, max_length=4 * MAX_VECTOR_LEN)]
    dtype: Literal["float32", "float16"] = "float32"


class ModelInput(msgspec.Struct, frozen=True, gc=False):  # gc=False: never in a cycle
    """Any of: raw numeric features, raw text, a model embedding (numbers, or base64)."""

    features: FiniteVector | None = None
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)] | None = None
    embedding: FiniteVector | EncodedEmbedding | None = None


class Prediction(msgspec.Struct, frozen=True, gc=False):  # gc=False: never in a cycle
    label: Label
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    probs: FiniteVector | None = None
    logits: FiniteVector | None = None


class InferenceEvent(msgspec.Struct, frozen=True, gc=False):  # gc=False: never in a cycle
    """One inference record. Unknown fields, at any level, are accepted and ignored (forward compatible)."""

    event_id: Identifier
    ts: Timestamp
    client_id: Identifier
    prediction: Prediction
    model: Identifier = "unknown"
    model_version: Label | None = None
    input: ModelInput | None = None
    ground_truth: Label | None = None
    tags: Annotated[dict[str, str], msgspec.Meta(max_length=MAX_TAGS)] = msgspec.field(default_factory=dict)

    @property
    def traffic(self) -> str:
        """The ``tags.traffic`` class: ``""`` for ordinary traffic, e.g. ``canary-adversarial``."""
        return self.tags.get("traffic", "")


REQUIRED_FIELDS = ("event_id", "ts", "client_id", "prediction")
_DECODER = msgspec.json.Decoder(InferenceEvent)


def validate_event(raw: bytes) -> InferenceEvent:
    """Validate one JSON record (raises ``msgspec.ValidationError`` or ``msgspec.DecodeError``)."""
    return _DECODER.decode(raw)


def validate_events(raws: Iterable[bytes]) -> list[InferenceEvent]:
    """Validate records, the decoder called straight from ``map`` (no Python frame per record); raises at the first
    bad one, as :func:`validate_event`.

    >>> [e.client_id for e in validate_events([b'{"event_id":"a","ts":1,"client_id":"c","prediction":{"label":1,'
    ...     b'"confidence":1}}'] * 2)]
    ['c', 'c']
    """
    return list(map(_DECODER.decode, raws))


def epoch_seconds(ts: float | datetime) -> float:
    """A validated ``ts`` as epoch seconds."""
    return ts.timestamp() if isinstance(ts, datetime) else ts


def event_json_schema() -> dict[str, Any]:
    """The contract as JSON Schema (draft 2020-12), for producers.

    >>> schema = event_json_schema()
    >>> schema["title"], sorted(schema["$defs"]["InferenceEvent"]["required"])
    ('advmon inference event', ['client_id', 'event_id', 'prediction', 'ts'])
    """
    schema = msgspec.json.schema(InferenceEvent)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "advmon inference event"
    return schema
