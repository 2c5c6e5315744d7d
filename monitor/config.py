"""Process settings from the environment (prefix ``ADVMON_``), validated once at start-up.

>>> s = Settings(fingerprint_secret="s3cret")
>>> s.bucket_seconds, s.fingerprint_secret.get_secret_value(), "s3cret" in repr(s)
(60, 's3cret', False)
"""

from __future__ import annotations

import logging
import socket
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.engine import EngineSettings

#: A fixed development secret keeps replays reproducible; production must set its own.
DEV_FINGERPRINT_SECRET = "advmon-development-secret-change-me"
log = logging.getLogger("advmon")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADVMON_", extra="ignore")

    fingerprint_secret: SecretStr = SecretStr(DEV_FINGERPRINT_SECRET)
    bucket_seconds: int = Field(default=60, ge=1, le=3600)
    grace_seconds: float = Field(default=60.0, ge=0)
    max_record_bytes: int = Field(default=1 << 20, ge=256)
    max_future_skew_seconds: float = Field(default=300.0, ge=0)  # ingest dead-letters events further ahead of its clock
    batch_size: int = Field(default=4096, ge=1, le=100_000)
    fingerprint_generation_queries: int = Field(default=50_000, ge=100)
    fingerprint_generation_hours: float = Field(default=24.0, gt=0)
    rules_dir: str | None = None
    metrics_port: int = Field(default=9310, ge=0, le=65535)
    # The Kafka daemons (``advmon ingest | alerter | scorer``).
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    instance_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    input_partitions: int = Field(default=6, ge=1, le=1000)
    idle_source_seconds: float = Field(default=120.0, gt=0)
    profile_path: str | None = None
    outbox_path: str = "advmon-outbox.sqlite3"  # the alerter's durable notification outbox (SQLite)
    alerter_data_dir: str = "advmon-alerter-data"  # the alerter's local faust state (table caches)
    scorer_backend: Literal["auto", "numpy", "torch"] = "auto"  # auto: torch on CUDA when present, else numpy
    store_raw_inputs: bool = False  # suspicious-inputs records carry the raw input (else fingerprints only)
    remote_scoring: bool = False  # ingest ships embeddings to `advmon scorer` instead of scoring them

    def engine_settings(self) -> EngineSettings:
        secret = self.fingerprint_secret.get_secret_value()
        if secret == DEV_FINGERPRINT_SECRET:
            log.warning("ADVMON_FINGERPRINT_SECRET is not set: using the development secret; "
                        "an attacker who knows it can craft queries that evade fingerprinting")
        return EngineSettings(
            fingerprint_secret=secret.encode(), bucket_s=self.bucket_seconds, grace_s=self.grace_seconds,
            fingerprint_generation_queries=self.fingerprint_generation_queries,
            fingerprint_generation_s=self.fingerprint_generation_hours * 3600.0,
            remote_embedding_scoring=self.remote_scoring,
        )
