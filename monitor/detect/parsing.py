"""Batch parsing at the edge: raw bytes -> validated :class:`EventBatch` + dead letters.

Nothing is lost: every input record ends either in the batch or in the dead letters,
with the reason and the original bytes. The parser never raises on bad input.

>>> good = b'{"event_id":"a","ts":1,"client_id":"c","prediction":{"label":"1","confidence":0.5}}'
>>> parsed = parse_batch([good, b"{oops", b'{"event_id":"b"}'])
>>> len(parsed.batch), [d.reason.split(":")[0] for d in parsed.dead]
(1, ['invalid JSON', 'invalid event'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from monitor.contracts.dead_letters import DeadLetter
from monitor.contracts.events import InferenceEvent
from monitor.detect.batch import EventBatch

#: Records above this size are dead-lettered before parsing (1 MiB by default).
DEFAULT_MAX_RECORD_BYTES = 1 << 20
_MAX_REASONS = 5


@dataclass(frozen=True)
class ParsedBatch:
    batch: EventBatch
    dead: list[DeadLetter]

    @property
    def total(self) -> int:
        return len(self.batch) + len(self.dead)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each failing field, e.g. ``prediction.confidence: ...``."""
    parts = []
    for item in error.errors(include_url=False)[:_MAX_REASONS]:
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-")) or "record"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    extra = error.error_count() - _MAX_REASONS
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def validate_record(raw: bytes, max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                    not_after: float | None = None) -> InferenceEvent | str:
    """Return the event, or the reason it was rejected. ``not_after`` (epoch seconds: the adapter's
    clock plus the tolerated skew) refuses event times in the future, which would otherwise move the
    watermark ahead and close every window early."""
    if len(raw) > max_bytes:
        return f"record too large: {len(raw)} bytes > limit {max_bytes}"
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(document, dict):
        return f"invalid event: record must be a JSON object, got {type(document).__name__}"
    try:
        event = InferenceEvent.model_validate(document)
    except ValidationError as exc:
        return f"invalid event: {describe_validation_error(exc)}"
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # defensive: never fatal
        return f"invalid event: {exc}"
    if not_after is not None and event.ts > not_after:
        return f"ts in the future: {event.ts:.3f} is {event.ts - not_after:.0f} s past the tolerated clock skew"
    return event


def parse_batch(
    records: Sequence[bytes],
    sources: Sequence[str] | None = None,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    not_after: float | None = None,
) -> ParsedBatch:
    """Validate raw records; ``sources`` names each (file:line, topic/partition@offset).

    >>> future = b'{"event_id":"a","ts":9e9,"client_id":"c","prediction":{"label":"1","confidence":0.5}}'
    >>> parse_batch([future], not_after=2e9).dead[0].reason.split(":")[0]
    'ts in the future'
    """
    events: list[InferenceEvent] = []
    dead: list[DeadLetter] = []
    for index, raw in enumerate(records):
        result = validate_record(raw, max_bytes, not_after)
        if isinstance(result, str):
            source = sources[index] if sources is not None else f"#{index}"
            dead.append(DeadLetter(reason=result, raw=bytes(raw), source=source))
        else:
            events.append(result)
    return ParsedBatch(EventBatch.from_events(events), dead)


def iter_lines(path: str, batch_size: int = 4096) -> Iterable[tuple[list[bytes], list[str]]]:
    """Read a JSON Lines file in batches of (records, sources); blank lines are skipped."""
    records: list[bytes] = []
    sources: list[str] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            records.append(stripped)
            sources.append(f"{path}:{number}")
            if len(records) >= batch_size:
                yield records, sources
                records, sources = [], []
    if records:
        yield records, sources
