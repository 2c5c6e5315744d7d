"""The sli-buckets message: what ingest encodes the alerter decodes, and a malformed one is a WireError."""

import numpy as np
import orjson
import pytest

from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import SliRows
from monitor.contracts.sli_buckets import SliBatch
from monitor.errors import WireError


def batch() -> SliBatch:
    rows = SliRows.from_columns(bucket=np.array([60, 60, 120]), model=np.array(["m"] * 3, dtype=object),
                                client=np.array(["a", "b", "a"], dtype=object), ts=np.array([61.0, 62.0, 125.0]),
                                flags={"events": np.ones(3, bool), "anomalous": np.array([True, False, True])},
                                confidence=np.array([0.5, 0.9, 0.7]))
    flagged = FlaggedEvents.of(["e1", "e2"], ["m", "m"], ["a", "a"], [61.0, np.nan], ["anomalous", ""], ["ab", ""])
    return SliBatch("ingest-0", 125.0, 1, {"inference-logs/0": (10, 13)}, rows, flagged)


def test_a_message_round_trips_with_unmeasured_times_as_nan():
    sent = batch()
    back = SliBatch.decode(sent.encode())
    for column in ("bucket", "model", "client", "values", "first"):
        assert np.array_equal(getattr(back.rows, column), getattr(sent.rows, column))
    assert np.isinf(back.rows.first).any()  # no offending event: inf, sent as null
    assert back.flagged.ts[0] == 61.0 and np.isnan(back.flagged.ts[1])
    assert back.flagged.reason.tolist() == ["anomalous", ""] and back.offsets == {"inference-logs/0": (10, 13)}


@pytest.mark.parametrize("change, reason", [
    (lambda m: m["rows"]["values"][0].pop(), "wrong width"),
    (lambda m: m["rows"]["first_bad_ts"].append([None]), "different lengths"),
    (lambda m: m["suspicious"]["ts"].pop(), "different lengths"),
    (lambda m: m.update(extra=1), "unknown field `extra`"),
    (lambda m: m.update(input_partitions=-1), ">= 0"),
    (lambda m: m["rows"]["values"][1].__setitem__(0, "x"), "Expected `float`"),
    (lambda m: m.update(v=2), "version 2"),
    (lambda m: m["rows"]["columns"].__setitem__(0, "next_build_counter"), r"\['next_build_counter'\] are not this"),
    (lambda m: m["rows"]["bad_columns"].append("anomalous"), "repeated"),
])
def test_a_malformed_message_is_a_wire_error_that_says_what(change, reason):
    message = orjson.loads(batch().encode())
    change(message)
    with pytest.raises(WireError, match=reason):
        SliBatch.decode(orjson.dumps(message))


def test_only_columns_with_a_value_travel_and_the_others_read_as_zero():
    sent = batch()
    message = orjson.loads(sent.encode())
    assert message["rows"]["columns"] == ["events", "anomalous", "conf_sum", "conf_sumsq"]
    assert message["rows"]["bad_columns"] == ["anomalous"]
    back = SliBatch.decode(sent.encode())
    assert np.array_equal(back.rows.values, sent.rows.values) and np.array_equal(back.rows.first, sent.rows.first)
    message["rows"]["columns"].reverse()  # any order of known columns
    for row in message["rows"]["values"]:
        row.reverse()
    assert np.array_equal(SliBatch.decode(orjson.dumps(message)).rows.values, sent.rows.values)
