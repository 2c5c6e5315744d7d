"""Log output: JSON lines, the configured level, and the Kafka clients' normal start-up noise shown as INFO."""

import io
import logging

import orjson
import pytest

from monitor.cli.logs import configure_logging

COORDINATOR = "aiokafka.consumer.group_coordinator"


@pytest.fixture(autouse=True)
def restored_logging():
    """These tests configure the process's root logger: put it back for the tests after them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream):
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_coordinator_not_yet_available_is_info_not_an_error():
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger(COORDINATOR).error("Group Coordinator Request failed: %s",
                                         "[Error 15] GroupCoordinatorNotAvailableError")
    logging.getLogger(COORDINATOR).error("Group Coordinator Request failed: %s", "[Error 30] GroupAuthorizationFailed")
    logging.getLogger("mode.timers").warning("Timer %s is overlapping (interval=%r runtime=%r)", "commit", 2.8, 3.1)
    assert [(r["level"], r["logger"]) for r in lines(stream)] == [("INFO", COORDINATOR), ("ERROR", COORDINATOR),
                                                                 ("INFO", "mode.timers")]


def test_at_warning_level_the_start_up_noise_is_gone_and_real_errors_stay():
    stream = io.StringIO()
    configure_logging("WARNING", "text", stream=stream)
    logging.getLogger(COORDINATOR).error("Group Coordinator Request failed: GroupCoordinatorNotAvailableError")
    logging.getLogger("advmon").info("hidden")
    logging.getLogger("advmon").error("shown")
    assert stream.getvalue().count("\n") == 1 and "ERROR advmon: shown" in stream.getvalue()
