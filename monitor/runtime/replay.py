"""``advmon replay``: a JSON Lines file through the in-process runtime, in event time.

Deterministic: the same file, rules, profile and secret give the same alerts.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import orjson

from monitor.contracts.dead_letters import DeadLetter
from monitor.detect.engine import BatchResult
from monitor.detect.parsing import iter_lines
from monitor.detect.profiles import Profile
from monitor.notify.sinks.jsonl import JsonlSink
from monitor.runtime.inprocess import InProcessRuntime
from monitor.settings import Settings
from monitor.spec.rules import Rules


class DeadLetterFile:
    """Rejected records with their reason, one JSON line each; the file is created on the first one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._handle: BinaryIO | None = None

    def write(self, dead: list[DeadLetter]) -> None:
        if self._handle is None:
            self._handle = open(self.path, "wb")
        for letter in dead:
            self._handle.write(letter.to_json() + b"\n")
        self.count += len(dead)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def replay(path: str, settings: Settings, rules: Rules, profile_path: str | None = None,
           alerts_out: str | None = None, dlq_out: str = "dead-letters.jsonl", batch_size: int = 4096,
           suspicious_out: str | None = None) -> str:
    """Process the file; returns a one-paragraph summary. ``suspicious_out``: every flagged event, with every
    score, its ratio to its threshold and the reason (the ``suspicious-inputs`` record), one JSON line each."""
    profile = Profile.load(profile_path) if profile_path else None
    alerts_file = JsonlSink(alerts_out) if alerts_out else None
    flagged_file = open(suspicious_out, "wb") if suspicious_out else None

    def write_flagged(result: BatchResult) -> None:
        if flagged_file is not None:
            flagged_file.writelines(orjson.dumps(record) + b"\n" for record in result.flagged.records())

    if dlq_out and os.path.exists(dlq_out):
        os.remove(dlq_out)  # a stale file from an earlier run would be mistaken for this one's
    dead_file = DeadLetterFile(dlq_out)
    runtime = InProcessRuntime.build(
        settings, rules, sinks=[], profile=profile, on_dead=dead_file.write,
        on_alerts=alerts_file.write if alerts_file else (lambda alerts: None), on_batch=write_flagged,
    )
    runtime.pipeline.routes = []  # replay is forensic: alerts go to the file, never to receivers
    try:
        for records, sources in iter_lines(path, batch_size):
            runtime.feed(records, sources)
        runtime.finish()
    finally:
        dead_file.close()
        if alerts_file:
            alerts_file.close()
        if flagged_file:
            flagged_file.close()
    stats = runtime.stats
    firing = sum(a.status == "firing" for a in stats.alerts)
    lines = [f"advmon replay: {stats.events} events, {stats.dead} rejected, {stats.late} late, "
             f"{stats.suspicious} suspicious, {firing} alerts fired, {len(stats.alerts) - firing} resolved"]
    if stats.dead:
        lines.append(f"  rejected records with their reasons: {dlq_out}")
    if alerts_out:
        lines.append(f"  alerts: {alerts_out}")
    if suspicious_out:
        lines.append(f"  flagged events with their scores: {suspicious_out}")
    if profile is None:
        lines.append("  no --profile: input-anomaly scores are off (fingerprints, SLIs and drift still run)")
    return "\n".join(lines)
