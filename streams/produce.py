"""``advmon produce``: write inference records to ``inference-logs`` (a JSON Lines file or the demo scenario).

Records are keyed by ``client_id`` (one client's queries meet in one partition); records that are
not JSON objects are sent unkeyed, as a broken client would, so they exercise the dead-letter path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import orjson

log = logging.getLogger("advmon.produce")


def client_key(record: bytes) -> bytes | None:
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    client = doc.get("client_id") if isinstance(doc, dict) else None
    return client.encode() if isinstance(client, str) else None


def file_records(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def produce(bootstrap: str, topic: str, records: Iterable[bytes], rate: float = 0.0, linger_ms: int = 20) -> int:
    """Send records (``rate`` records/s, 0 = as fast as possible); returns how many the broker acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, batch_size=256 * 1024,
                             max_request_size=8 << 20, enable_idempotence=True)
    sent, started = 0, time.monotonic()
    failures: list[Exception] = []
    try:
        for record in records:
            producer.send(topic, record, key=client_key(record)).add_errback(failures.append)
            sent += 1
            if rate > 0 and sent % 100 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} records were not acknowledged: {failures[0]}")
    return sent
