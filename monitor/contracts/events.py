"""The inference event contract (topic ``inference-logs``; JSON Lines for replay).

One record per inference, validated once at the edge. See ``design.md`` for the
contract; this module is its single executable definition.

>>> e = InferenceEvent.model_validate({
...     "event_id": "e1", "ts": "2026-11-25T10:00:00.5Z", "client_id": "key_1",
...     "model": "digits-mlp", "prediction": {"label": 7, "confidence": 0.9},
...     "input": {"embedding": {"b64": "AACAPwAAAEA=", "dtype": "float32"}}})
>>> e.ts, e.prediction.label, e.input.embedding_array().tolist()
(1795600800.5, '7', [1.0, 2.0])
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

#: Bounds that keep one hostile record from costing unbounded memory or CPU.
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_VECTOR_LEN = 65_536
MAX_TEXT_CHARS = 100_000
MAX_TAGS = 64

_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def _finite_number(value: Any) -> float:
    """Accept ints and floats (not bools, not strings), reject NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("must be finite (NaN and infinity are rejected)")
    return result


def _label(value: Any) -> str:
    """Labels are strings on the wire; integer class ids are accepted and stringified."""
    if isinstance(value, bool):
        raise ValueError("must be a string or an integer class id, got bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string or an integer class id, got {type(value).__name__}")


def _timestamp(value: Any) -> float:
    """Event time as epoch seconds, from RFC 3339 text or an epoch number."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be RFC 3339 text (e.g. 2026-11-25T10:00:00Z) or epoch seconds") from None
        if parsed.tzinfo is None:
            raise ValueError("RFC 3339 timestamp needs a time zone offset (e.g. 'Z')")
        return parsed.timestamp()
    seconds = _finite_number(value)
    if not 0 <= seconds < 32_503_680_000:  # year 3000
        raise ValueError("epoch seconds out of range")
    return seconds


Timestamp = Annotated[float, BeforeValidator(_timestamp)]
Label = Annotated[str, BeforeValidator(_label), Field(min_length=1, max_length=MAX_LABEL_CHARS)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
#: A flat list of finite numbers (ints accepted; bools, strings, NaN and infinities rejected), validated in
#: pydantic-core's compiled code: no Python runs per value.
FiniteVector = Annotated[list[Annotated[float, Strict(), AllowInfNan(False)]], Field(max_length=MAX_VECTOR_LEN)]


class _Strict(BaseModel):
    """Nested objects: unknown keys are kept (forward compatible) but never used."""

    model_config = ConfigDict(extra="allow", frozen=True)


class EncodedEmbedding(_Strict):
    """A little-endian binary embedding: ``{"b64": ..., "dtype": "float32"|"float16"}``."""

    b64: str = Field(max_length=4 * MAX_VECTOR_LEN * 4 // 3 + 4)
    dtype: Literal["float32", "float16"] = "float32"

    @model_validator(mode="after")
    def _decodes(self) -> EncodedEmbedding:
        self.to_array()
        return self

    def to_array(self) -> np.ndarray:
        try:
            raw = base64.b64decode(self.b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("b64 is not valid base64") from None
        dtype = _DTYPES[self.dtype]
        if not raw or len(raw) % dtype.itemsize:
            raise ValueError(f"b64 holds {len(raw)} bytes, not a whole number of {self.dtype} values")
        array = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("embedding must contain only finite numbers")
        return array


class ModelInput(_Strict):
    """Any of: raw numeric features, raw text, a model embedding."""

    features: FiniteVector | None = None
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    embedding: FiniteVector | EncodedEmbedding | None = Field(default=None, union_mode="left_to_right")

    @field_validator("features", "embedding")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("must not be empty")
        return value

    def features_array(self) -> np.ndarray | None:
        return None if self.features is None else np.asarray(self.features, dtype=np.float32)

    def embedding_array(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        if isinstance(self.embedding, EncodedEmbedding):
            return self.embedding.to_array()
        return np.asarray(self.embedding, dtype=np.float32)


class Prediction(_Strict):
    label: Label
    confidence: Annotated[float, BeforeValidator(_finite_number), Field(ge=0.0, le=1.0)]
    probs: FiniteVector | None = None
    logits: FiniteVector | None = None


class InferenceEvent(BaseModel):
    """One inference record. Unknown top-level fields are kept but ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: Identifier
    ts: Timestamp
    client_id: Identifier
    model: Identifier = "unknown"
    model_version: Annotated[str, BeforeValidator(_label)] | None = None
    input: ModelInput | None = None
    prediction: Prediction
    ground_truth: Label | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)

    @property
    def traffic(self) -> str:
        """The ``tags.traffic`` class: ``""`` for ordinary traffic, e.g. ``canary-adversarial``."""
        return self.tags.get("traffic", "")

    @property
    def is_canary(self) -> bool:
        return self.traffic.startswith("canary")

    @property
    def is_adversarial_canary(self) -> bool:
        return self.traffic == "canary-adversarial"
