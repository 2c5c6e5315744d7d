"""Dead letters: records that failed validation, kept with their reason and original bytes.

>>> letter = DeadLetter(reason="invalid JSON: x", raw=b"{oops", source="f.jsonl:3")
>>> DeadLetter.from_json(letter.to_json()) == letter
True
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    raw: bytes
    source: str = ""

    def to_json(self) -> bytes:
        """One JSON line; the original bytes travel base64-encoded so nothing is altered."""
        return orjson.dumps(
            {"reason": self.reason, "source": self.source, "raw_b64": base64.b64encode(self.raw).decode()}
        )

    @classmethod
    def from_json(cls, line: bytes) -> DeadLetter:
        doc = orjson.loads(line)
        return cls(reason=doc["reason"], raw=base64.b64decode(doc["raw_b64"]), source=doc.get("source", ""))

    @property
    def category(self) -> str:
        """A bounded label for metrics: the text before the first colon of the reason."""
        head = self.reason.split(":", 1)[0]
        return head if head in {"invalid JSON", "invalid event", "record too large", "ts in the future"} else "other"
