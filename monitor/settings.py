"""Process settings: command-line overrides over ``ADVMON_*`` environment variables over defaults,
validated once at start-up by :meth:`Settings.load` (the one way every command builds them).

>>> s = Settings.load({"bucket_seconds": 30}, environ={"ADVMON_FINGERPRINT_SECRET": "s3cret"})
>>> s.bucket_seconds, s.fingerprint_secret.get_secret_value(), "s3cret" in repr(s)
(30, 's3cret', False)
>>> try:
...     Settings.load(environ={"ADVMON_BUCKET_SECONDS": "abc"})
... except ConfigError as exc:
...     print(exc)
ADVMON_BUCKET_SECONDS='abc': Input should be a valid integer, unable to parse string as an integer
>>> unknown_variables({"ADVMON_BUKET_SECONDS": "5", "ADVMON_PD_KEY": "k", "HOME": "/"}, also_known=["ADVMON_PD_KEY"])
['ADVMON_BUKET_SECONDS']
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.detect.engine import EngineSettings
from monitor.detect.matcher import MatcherSettings
from monitor.errors import ConfigError

PREFIX = "ADVMON_"

#: A fixed development secret keeps replays reproducible; production must set its own.
DEV_FINGERPRINT_SECRET = "advmon-development-secret-change-me"
log = logging.getLogger("advmon")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    fingerprint_secret: SecretStr = SecretStr(DEV_FINGERPRINT_SECRET)
    bucket_seconds: int = Field(default=60, ge=1, le=3600)
    grace_seconds: float = Field(default=60.0, ge=0)
    max_record_bytes: int = Field(default=1 << 20, ge=256)
    max_future_skew_seconds: float = Field(default=300.0, ge=0)  # ingest dead-letters events further ahead of its clock
    batch_size: int = Field(default=4096, ge=1, le=100_000)
    batch_linger_seconds: float = Field(default=0.5, ge=0, le=60)  # ingest/scorer wait this long to fill a batch
    fingerprint_generation_queries: int = Field(default=50_000, ge=100, lt=2**31)  # 32-bit ids in the index
    fingerprint_generation_hours: float = Field(default=24.0, gt=0)
    rules_dir: str | None = None
    metrics_port: int = Field(default=9310, ge=0, le=65535)  # also the daemons' /healthz and /readyz
    http_host: str = "127.0.0.1"  # address of the daemons' HTTP endpoint (0.0.0.0 in the container image)
    # The Kafka daemons (``advmon ingest | alerter | scorer``).
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    instance_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    input_partitions: int = Field(default=6, ge=1, le=1000)
    # sli-buckets and scores: 1 is one alerter running every rule; more shard the alerter (monitor.contracts.shards):
    # partition 0 the model-wide rules, the others the per-client rules for a share of the clients each.
    alerter_partitions: int = Field(default=1, ge=1, le=1000)
    # How long a killed alerter's partitions wait for it to come back before they move to another alerter.
    alerter_session_timeout_seconds: float = Field(default=60.0, ge=6, le=1800)
    idle_source_seconds: float = Field(default=120.0, gt=0)
    profile_path: str | None = None
    outbox_path: str = "advmon-outbox.sqlite3"  # the alerter's durable notification outbox (SQLite)
    alerter_data_dir: str = "advmon-alerter-data"  # the alerter's local faust state (table caches)
    scorer_backend: Literal["auto", "numpy", "torch"] = "auto"  # auto: torch on CUDA when present, else numpy
    store_raw_inputs: bool = False  # suspicious-inputs records carry the raw input (else fingerprints only)
    remote_scoring: bool = False  # ingest ships embeddings to `advmon scorer` instead of scoring them
    remote_matching: bool = False  # ingest ships query fingerprints to `advmon matcher` instead of matching them
    # `advmon matcher`: 1 is one matcher holding the whole index; more shard it by hash value, one process per shard
    # (``matcher_shard`` 0..N-1) and one reduce (``matcher_shard`` "reduce"), which alone publishes to the alerter.
    matcher_shards: int = Field(default=1, ge=1, le=64)
    matcher_shard: str | None = Field(default=None, pattern=r"^(reduce|[0-9]{1,2})$")
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line on stderr
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    collect_token: SecretStr | None = None  # `advmon collect`: the bearer token its POSTs must carry

    @field_validator("topic_prefix")
    @classmethod
    def _separated(cls, prefix: str) -> str:
        """``evb1`` becomes ``evb1.``: a prefix always ends with a separator (``.``, ``_`` or ``-``).

        >>> Settings(topic_prefix="evb1").topic_prefix, Settings(topic_prefix="team-a_").topic_prefix
        ('evb1.', 'team-a_')
        """
        return prefix if not prefix or prefix[-1] in "._-" else f"{prefix}."

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
             option_names: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: the process environment) with ``overrides`` (command-line
        values by setting name; None means not given) on top; an invalid value raises :class:`ConfigError`
        naming the variable, or the option (``option_names``: setting -> ``--flag``) it came from."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        from_env = {name: environ[f"{PREFIX}{name.upper()}"] for name in cls.model_fields
                    if f"{PREFIX}{name.upper()}" in environ and name not in given}
        try:
            return cls.model_validate({**from_env, **given})
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                name = str(error["loc"][0]) if error["loc"] else ""
                flag = (option_names or {}).get(name, f"--{name.replace('_', '-')}")
                where = flag if name in given else f"{PREFIX}{name.upper()}"
                problems.append(f"{where}={error['input']!r}: {error['msg'].removeprefix('Value error, ')}")
            raise ConfigError("; ".join(problems)) from None

    def engine_settings(self) -> EngineSettings:
        secret = self.fingerprint_secret.get_secret_value()
        if secret == DEV_FINGERPRINT_SECRET:
            log.warning("ADVMON_FINGERPRINT_SECRET is not set: using the development secret; "
                        "an attacker who knows it can craft queries that evade fingerprinting")
        return EngineSettings(
            fingerprint_secret=secret.encode(), bucket_s=self.bucket_seconds, grace_s=self.grace_seconds,
            fingerprint_generation_queries=self.fingerprint_generation_queries,
            fingerprint_generation_s=self.fingerprint_generation_hours * 3600.0,
            remote_embedding_scoring=self.remote_scoring, remote_matching=self.remote_matching,
        )


    def matcher_settings(self) -> MatcherSettings:
        """``advmon matcher``'s: the engine's bucket, grace and index sizes, and how long a quiet ingest worker
        holds the watermark."""
        return MatcherSettings(self.bucket_seconds, self.grace_seconds,
                               generation_queries=self.fingerprint_generation_queries,
                               generation_s=self.fingerprint_generation_hours * 3600.0,
                               idle_source_s=self.idle_source_seconds)


def unknown_variables(environ: Mapping[str, str], also_known: Iterable[str] = ()) -> list[str]:
    """``ADVMON_*`` variables that name no setting (nor a secret the rules name): most likely typos."""
    known = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields} | set(also_known)
    return sorted(name for name in environ if name.startswith(PREFIX) and name not in known)
