"""Log output of every command: text or one JSON object per line (``ADVMON_LOG_FORMAT``), at
``ADVMON_LOG_LEVEL`` (``-v``: DEBUG); the Kafka clients' chatter only from WARNING up.

>>> import io
>>> stream = io.StringIO()
>>> configure_logging("INFO", "json", stream=stream)
>>> logging.getLogger("advmon.doc").warning("disk %s full", "/tmp")
>>> record = orjson.loads(stream.getvalue()); (record["level"], record["logger"], record["message"])
('WARNING', 'advmon.doc', 'disk /tmp full')
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

import orjson

_CLIENTS = ("kafka", "aiokafka", "faust", "mode")
_HANDLER = "advmon"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"[, "exception"]}``, UTC time with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


class TransientClientMessages(logging.Filter):
    """Messages the Kafka clients log as ERROR or WARNING that are normal on a first start (the broker is
    still creating its group-coordinator topic) or under load (a faust timer ran late): shown as INFO. A
    coordinator that stays away still shows: ``/readyz`` fails and consumer lag grows."""

    LOGGERS = ("aiokafka.consumer.group_coordinator", "mode.timers")
    _MARKERS = ("GroupCoordinatorNotAvailable", " is overlapping (")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and any(m in record.getMessage() for m in self._MARKERS):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Our handler on the root logger (replacing the one an earlier call added; others are left alone)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(_HANDLER)
    handler.setLevel(level)  # records the filter below lowered to INFO are judged again here
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _CLIENTS:  # client chatter; their warnings still show
        logging.getLogger(noisy).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    for name in TransientClientMessages.LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TransientClientMessages) for f in logger.filters):
            logger.addFilter(TransientClientMessages())
