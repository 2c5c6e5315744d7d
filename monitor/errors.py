"""advmon's one error hierarchy: every wing and adapter raises these; only the CLI turns them into exit codes.

Each class carries the exit code the CLI maps it to and a one-line message meant for a person.

>>> try:
...     raise ConfigError("ADVMON_BUCKET_SECONDS: must be an integer, got 'abc'")
... except AdvmonError as exc:
...     exc.exit_code, str(exc)
(2, "ADVMON_BUCKET_SECONDS: must be an integer, got 'abc'")
"""

from __future__ import annotations


class AdvmonError(Exception):
    """Base of every error advmon raises on purpose; the message is one line for a person."""

    exit_code = 1


class ConfigError(AdvmonError, ValueError):
    """A setting, argument or environment variable is invalid or missing (fix the configuration)."""

    exit_code = 2


class RulesError(ConfigError):
    """A rules file is invalid; the message names the file and line of each problem."""


class ProfileError(ConfigError):
    """A reference profile cannot be fitted, loaded or used."""


class InputError(AdvmonError, ValueError):
    """An input file or stream cannot be read (missing file, unreadable records)."""

    exit_code = 2


class WireError(AdvmonError, ValueError):
    """A message on an internal topic does not follow the contract."""


class ServiceUnavailable(AdvmonError):
    """A service advmon needs (Kafka, an HTTP port) cannot be reached or bound; a supervisor may retry."""

    exit_code = 3
