"""The alerter's stored state: typed entries round-trip through the store, and entries written by earlier
builds (shorter counter rows) still read."""

import numpy as np

from monitor.alerting.state import AlerterState, BucketEntry, Progress, SamplesEntry, SourceEntry, stamped
from monitor.contracts.sli import VALUE_COLUMNS


def test_entries_round_trip_and_only_json_reaches_the_store():
    import orjson

    store = {}
    state = AlerterState(store)
    values = np.arange(len(VALUE_COLUMNS), dtype=float)
    first = np.array([np.inf] * 5 + [125.5])
    state.put_bucket("m", "c", 120, BucketEntry({"sli-buckets": 7}, values, first))
    state.put_total("m", 120, BucketEntry({"sli-buckets": 7}, 2 * values, first))
    state.put_total("m", 240, BucketEntry({"scores": 1}, values, first))
    state.put_samples("m", "c", SamplesEntry({"scores": 2}, [("e1", "ab"), ("e2", "")]))
    state.put_source("ingest-0", SourceEntry(seen=10.0, watermark=None, role="ingest", remote=True))
    state.put_progress(Progress({"sli-buckets": 7}, evaluated_until=3, released=['{"alert_id": "a"}']))
    orjson.dumps(store)  # a faust table with a JSON schema stores exactly this
    again = AlerterState(dict(store))
    [(model, client, bucket, entry)] = list(again.buckets())
    assert (model, client, bucket) == ("m", "c", 120) and np.array_equal(entry.values, values)
    assert np.array_equal(entry.first, first) and len(orjson.dumps(store[next(iter(store))])) < 800  # compact
    assert np.array_equal(again.total("m", 120).values, 2 * values) and again.total("m", 180) is None
    assert entry.reached("sli-buckets", 7) and not entry.reached("scores", 0)
    assert stamped(entry, "scores", 4) == {"sli-buckets": 7, "scores": 4}
    assert again.samples("m", "c").samples == [("e1", "ab"), ("e2", "")]
    assert dict(again.sources()) == {"ingest-0": SourceEntry(10.0, None, "ingest", True)}
    assert again.progress == Progress({"sli-buckets": 7}, 3, ['{"alert_id": "a"}'])
    assert again.expire_buckets(clients_before=180, totals_before=180) == 2  # the row and the total of bucket 120
    assert list(again.buckets()) == [] and [b for _, b, _ in again.totals()] == [240]
    assert again.expire_buckets(clients_before=0, totals_before=300) == 1 and len(again.store) == 3  # no other kind


def test_rows_written_before_columns_were_appended_read_with_zeros():
    store = {"b\x1fm\x1fc\x1f60": {"o": {"sli-buckets": 1}, "v": [5.0, 4.0], "f": [None] * 6}}
    [(_, _, _, entry)] = list(AlerterState(store).buckets())
    assert entry.values[:2].tolist() == [5.0, 4.0] and entry.values[2:].sum() == 0
    assert len(entry.values) == len(VALUE_COLUMNS) and np.isinf(entry.first).all()
