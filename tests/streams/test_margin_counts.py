"""The margin-counts reader: a missing topic is a configuration error that names the fix (no broker needed: the
topic listing is the only call before it)."""

import asyncio

import pytest

import streams.margin_counts as margin_counts
from monitor.errors import ConfigError


def test_a_missing_margin_counts_topic_stops_ingest_with_the_command_that_creates_it(monkeypatch):
    monkeypatch.setattr(margin_counts, "partition_counts", lambda bootstrap: {"p.inference-logs": 4})

    async def start():
        reader = margin_counts.MarginCountsReader("127.0.0.1:1", "p.margin-counts", sender="ingest-0-ab")
        try:
            await reader.start()
        finally:
            await reader.stop()

    with pytest.raises(ConfigError, match="p.margin-counts does not exist: run `advmon topics create`"):
        asyncio.run(start())
