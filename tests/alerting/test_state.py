"""The alerter's stored state: typed entries round-trip through the store, compactly, and entries written by
earlier builds (rows per client and bucket, evidence per client, shorter counter rows) still read."""

import base64
import zlib

import numpy as np
import orjson
import pytest

from monitor.alerting import state as state_module
from monitor.alerting.state import AlerterState, BucketEntry, MessageEntry, Progress, SourceEntry, stamped
from monitor.contracts.flagged import FlaggedEvents
from monitor.contracts.sli import BAD_COUNTERS, VALUE_COLUMNS, SliRows


def message(n: int, bucket: int = 120) -> MessageEntry:
    rng = np.random.default_rng(n)
    values = np.zeros((n, len(VALUE_COLUMNS)))  # a client's minute fills a few counters and histogram bins
    values[:, :12] = rng.integers(0, 5, (n, 12))
    values[:, 0] = rng.uniform(0, 1, n)  # and sums of arbitrary floats, as of confidences
    first = np.where(rng.random((n, len(BAD_COUNTERS))) < 0.1, bucket + 0.5, np.inf)
    rows = SliRows(np.full(n, bucket, np.int64), np.array(["m"] * n, object),
                   np.array([f"client-{i}" for i in range(n)], object), values, first)
    flagged = FlaggedEvents.of(["e1", "e2"], ["m", "m"], ["client-0", "client-1"], [1.0, 2.0], ["anomalous"] * 2,
                               ["ab", ""])
    return MessageEntry(rows, flagged)


def test_entries_round_trip_and_only_json_reaches_the_store():
    store = {}
    state = AlerterState(store)
    entry = message(2_000)
    state.put_message("sli-buckets", 7, entry)
    values, first = entry.rows.values[0], entry.rows.first[0]
    state.put_total("m", 120, BucketEntry({"sli-buckets": 7}, 2 * values, first))
    state.put_total("m", 240, BucketEntry({"scores": 1}, values, first))
    state.put_source("ingest-0", SourceEntry(seen=10.0, watermark=None, role="ingest", remote=True))
    state.put_progress(Progress({"sli-buckets": 7}, evaluated_until=3, released=['{"alert_id": "a"}']))
    orjson.dumps(store)  # a faust table with a JSON schema stores exactly this
    again = AlerterState(dict(store))
    [(topic, offset, back)] = list(again.messages())
    assert (topic, offset) == ("sli-buckets", 7) and again.has_message("sli-buckets", 7, newest=120)
    for column in ("bucket", "model", "client", "values", "first"):
        assert np.array_equal(getattr(back.rows, column), getattr(entry.rows, column))
    assert back.flagged.event_id.tolist() == ["e1", "e2"] and back.flagged.fingerprint.tolist() == ["ab", ""]
    assert len(orjson.dumps(store[next(iter(store))])) / 2_000 < 80  # bytes a row (its own entry: ~800)
    assert np.array_equal(again.total("m", 120).values, 2 * values) and again.total("m", 180) is None
    total = again.total("m", 120)
    assert total.reached("sli-buckets", 7) and not total.reached("scores", 0)
    assert stamped(total, "scores", 4) == {"sli-buckets": 7, "scores": 4}
    assert dict(again.sources()) == {"ingest-0": SourceEntry(10.0, None, "ingest", True)}
    assert again.progress == Progress({"sli-buckets": 7}, 3, ['{"alert_id": "a"}'])
    assert again.expire_buckets(clients_before=180, totals_before=180) == 2  # the message and the total of bucket 120
    assert list(again.messages()) == [] and [b for _, b, _ in again.totals()] == [240]
    assert again.expire_buckets(clients_before=0, totals_before=300) == 1 and len(again.store) == 2  # no other kind


def test_messages_read_in_the_order_they_were_applied_and_expire_by_their_newest_bucket():
    state = AlerterState({})
    for topic, offset, bucket in (("sli-buckets", 9, 180), ("scores", 2, 120), ("sli-buckets", 8, 120)):
        state.put_message(topic, offset, message(3, bucket))
    assert [(topic, offset) for topic, offset, _ in state.messages()] == \
        [("scores", 2), ("sli-buckets", 8), ("sli-buckets", 9)]
    assert state.expire_buckets(clients_before=180, totals_before=0) == 2
    assert [offset for _, offset, _ in state.messages()] == [9]


def test_entries_written_before_message_entries_read_and_expire():
    store = {"b\x1fm\x1fc\x1f60": {"o": {"sli-buckets": 1}, "v": [5.0, 4.0], "f": [None] * 6},  # shorter rows too
             "e\x1fm\x1fc": {"o": {"sli-buckets": 1}, "samples": [["e1", "ab"]]}}
    state = AlerterState(store)
    [(model, client, bucket, entry)] = list(state.buckets())
    assert (model, client, bucket) == ("m", "c", 60) and entry.reached("sli-buckets", 1)
    assert entry.values[:2].tolist() == [5.0, 4.0] and entry.values[2:].sum() == 0
    assert len(entry.values) == len(VALUE_COLUMNS) and np.isinf(entry.first).all()
    older = state.older_samples()
    assert list(zip(older.model, older.client_id, older.event_id, older.fingerprint, strict=True)) == \
        [("m", "c", "e1", "ab")]
    assert state.expire_buckets(clients_before=120, totals_before=0) == 1 and list(state.buckets()) == []


def test_messages_written_with_fewer_counter_columns_read_with_zeros():
    store = {}
    AlerterState(store).put_message("sli-buckets", 1, message(4))
    raw = store[next(iter(store))]
    narrow = message(4).rows.values[:, :-3]
    raw["v"] = base64.b64encode(zlib.compress(narrow.tobytes())).decode()
    raw["cols"] = [narrow.shape[1], len(BAD_COUNTERS)]
    [(_, _, back)] = list(AlerterState(store).messages())
    assert np.array_equal(back.rows.values[:, :-3], narrow) and not back.rows.values[:, -3:].any()


class DiesAfter(dict):
    """A store whose process dies after ``writes`` writes and deletions."""

    def __init__(self, content, writes):
        super().__init__(content)
        self.left = writes

    def _spend(self):
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1

    def __setitem__(self, key, value):
        self._spend()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._spend()
        super().__delitem__(key)


def rows_of(state):
    rows = SliRows.concat([entry.rows for _, _, entry in state.messages()]).combined()
    return rows.take(np.lexsort((rows.client.astype(str), rows.bucket)))


@pytest.mark.parametrize("writes", range(6))  # two parts, then four messages deleted: killed at each
def test_a_fold_killed_at_any_write_keeps_every_row_once(writes, monkeypatch):
    monkeypatch.setattr(state_module, "FOLD_ROWS", 4)
    store = {}
    state = AlerterState(store)
    for offset in range(4):
        state.put_message("sli-buckets", offset, message(3, bucket=60 * (1 + offset % 2)))
    state.put_message("sli-buckets", 4, message(3, bucket=180))  # still open: not folded
    before = rows_of(state)
    dying = DiesAfter(store, writes)
    with pytest.raises(SystemExit):
        AlerterState(dying).fold(after=-np.inf, before=180, per_key=5)
    after = AlerterState(dict(dying))
    assert np.array_equal(rows_of(after).values, before.values) and np.array_equal(rows_of(after).first, before.first)
    assert after.fold(after=-np.inf, before=180, per_key=5) in (0, 4)  # finished or done again; every row still once
    assert np.array_equal(rows_of(after).values, before.values)


def test_a_fold_keeps_a_row_per_client_and_minute_and_the_latest_evidence_per_client():
    state = AlerterState({})
    for offset in range(3):
        state.put_message("sli-buckets", offset, message(3, bucket=60))
    state.put_message("scores", 0, message(3, bucket=120))
    before = rows_of(state)
    assert state.fold(after=120, before=180, per_key=1) == 0  # offered to a fold before: left as they are
    assert state.fold(after=-np.inf, before=120, per_key=1) == 3
    assert state.fold(after=-np.inf, before=120, per_key=1) == 0  # folds are not folded again
    [(topic, _, fold), (_, _, kept)] = list(state.messages())
    assert topic == "folded" and len(fold.rows) == 3 and len(kept.rows) == 3  # three clients' minute 60, once
    assert np.array_equal(rows_of(state).values, before.values)
    assert fold.flagged.client_id.tolist() == ["client-0", "client-1"]  # the latest one of each (of three messages)


def test_messages_of_distinct_clients_are_not_folded_where_that_would_save_nothing():
    state = AlerterState({})
    for offset in range(3):  # every client in one message: a row per client and minute already
        entry = message(3, bucket=60)
        state.put_message("sli-buckets", offset, MessageEntry(
            SliRows(entry.rows.bucket, entry.rows.model, entry.rows.client + f"-{offset}", entry.rows.values,
                    entry.rows.first), entry.flagged))
    stored = dict(state.store)
    assert state.fold(after=-np.inf, before=120, per_key=5) == 0 and state.store == stored
