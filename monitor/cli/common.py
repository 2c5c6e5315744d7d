"""What every command shares: options that override settings, and loading settings, rules and profiles.

An option that overrides a setting is declared with :func:`setting_option` (its ``dest`` is the
setting's name), so :func:`settings_of` builds every command's settings the same way.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = setting_option(parser, "--bootstrap", dest="kafka_bootstrap")
>>> settings_of(parser.parse_args(["--bootstrap", "k:9093"]), environ={}).kafka_bootstrap
'k:9093'
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from monitor.detect.profiles import Profile
from monitor.errors import ConfigError, InputError, ProfileError, ServiceUnavailable
from monitor.settings import Settings, unknown_variables
from monitor.spec.rules import Rules, default_rules_dir, load_rules

log = logging.getLogger("advmon")

#: setting name -> the option that overrides it (filled as commands declare their options)
OPTION_NAMES: dict[str, str] = {}


def setting_option(parser: argparse.ArgumentParser, *flags: str, dest: str, **options: Any) -> argparse.Action:
    """Declare an option that overrides the setting ``dest`` (default None: the environment's value stands)."""
    if dest not in Settings.model_fields:
        raise ValueError(f"{dest} is not a setting")
    OPTION_NAMES[dest] = flags[0]
    return parser.add_argument(*flags, dest=dest, default=None, **options)


def settings_of(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The command's settings: its setting options over ``ADVMON_*`` variables over defaults."""
    overrides = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    return Settings.load(overrides, environ, OPTION_NAMES)


def rules_of(settings: Settings) -> Rules:
    """``--rules``, else ``ADVMON_RULES_DIR``, else the shipped rules; warns about ``ADVMON_*`` typos."""
    path = Path(settings.rules_dir) if settings.rules_dir else default_rules_dir()
    if not path.is_dir():
        raise ConfigError(f"rules directory {path} does not exist (set --rules or ADVMON_RULES_DIR)")
    rules = load_rules(path)
    warn_unknown_variables(rules)
    return rules


def warn_unknown_variables(rules: Rules | None = None) -> None:
    secrets = [v for r in (rules.receivers if rules else ()) for v in (r.key_env, r.url_env, r.hmac_secret_env) if v]
    for name in unknown_variables(os.environ, also_known=secrets):
        log.warning("environment variable %s is not an advmon setting (a typo?); it is ignored", name)


def profile_of(path: str | None, required: bool = False) -> Profile | None:
    if not path:
        if required:
            raise ConfigError("a reference profile is required (--profile or ADVMON_PROFILE_PATH)")
        log.warning("no reference profile (--profile / ADVMON_PROFILE_PATH): input anomaly scores are off")
        return None
    if not Path(path).is_file():
        raise ProfileError(f"profile {path}: no such file (create one with `advmon profile fit`)")
    return Profile.load(path)


def existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    return path


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> None:
    """Prometheus ``/metrics`` for the in-process commands (the daemons serve health too: streams.http)."""
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot serve /metrics on {host}:{port}: {exc} (use --metrics-port 0 to "
                                 "disable)") from None
    print(f"advmon: serving Prometheus metrics on http://{host}:{port}/metrics", file=sys.stderr)
