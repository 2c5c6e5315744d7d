"""A batch's vectors as matrices: grouped by length, clipped to float32, base64 decoded and checked per batch."""

import base64

import numpy as np
import orjson

from monitor.detect.parsing import SLICE, parse_batch
from monitor.detect.vectors import encoded_groups, list_groups, take_groups


def b64(values, dtype="<f4"):
    return base64.b64encode(np.asarray(values, dtype).tobytes()).decode()


def test_lists_grouped_by_length_and_clipped_to_float32():
    groups = list_groups([[1e308, -1e308], None, [0.5, 2, 3], [1, 2]])
    assert groups[2][0].tolist() == [0, 3] and np.isfinite(groups[2][1]).all()
    assert groups[2][1][0, 0] == np.finfo(np.float32).max and groups[3][1].dtype == np.float32


def test_encoded_groups_read_each_dtype_and_reject_partial_or_infinite_values():
    raw = [np.asarray(v, d).tobytes() for v, d in (([1.5, 2.0], "<f2"), ([1, 2, 3], "<f4"))]
    decoded = raw + [b"\0\0\0", np.asarray([np.inf, 1], "<f4").tobytes(), np.asarray([4, 5, 6], "<f4").tobytes()]
    dtypes = ["float16", "float32", "float32", "float32", "float32"]
    groups, rejected = encoded_groups([0, 1, 2, 3, 4], decoded, dtypes)  # row 5 has none
    assert groups[2][0].tolist() == [0] and groups[2][1].tolist() == [[1.5, 2.0]]
    assert groups[3][0].tolist() == [1, 4] and groups[3][1].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert set(rejected) == {2, 3} and "whole number" in rejected[2] and "finite" in rejected[3]


def test_slices_joined_keep_rows_vectors_and_dead_letters_in_input_order():
    """More records than one parse slice, with bad ones spread over the slices: the same as one by one."""
    def record(i):
        doc = {"event_id": str(i), "ts": i, "client_id": "c", "prediction": {"label": "1", "confidence": 0.5},
               "input": {"features": [i] * (2 + i % 3), "embedding": {"b64": b64([i, -i])}}}
        return orjson.dumps(doc) if i % 97 else b"{bad"
    records = [record(i) for i in range(3 * SLICE + 5)]
    parsed = parse_batch(records)
    good = [i for i in range(len(records)) if i % 97]
    assert parsed.valid.tolist() == good and parsed.batch.event_id.tolist() == [str(i) for i in good]
    assert [d.source for d in parsed.dead] == [f"#{i}" for i in range(0, len(records), 97)]
    for size, (rows, matrix) in parsed.batch.feature_groups().items():
        assert (parsed.valid[rows] % 3 + 2 == size).all() and (matrix[:, 0] == parsed.valid[rows]).all()
    rows, matrix = parsed.batch.embedding_groups()[2]
    assert rows.tolist() == list(range(len(good))) and (matrix[:, 0] == np.asarray(good)).all()


def test_embeddings_as_numbers_and_as_base64_share_one_group_in_row_order():
    def record(i, embedding):
        return orjson.dumps({"event_id": str(i), "ts": i, "client_id": "c", "input": {"embedding": embedding},
                             "prediction": {"label": "1", "confidence": 0.5}})

    parsed = parse_batch([record(0, {"b64": b64([0, 1])}), record(1, [2, 3]), record(2, {"b64": b64([4, 5])})])
    rows, matrix = parsed.batch.embedding_groups()[2]
    assert rows.tolist() == [0, 1, 2] and matrix.tolist() == [[0, 1], [2, 3], [4, 5]]


def test_take_groups_renumbers_rows():
    groups = {2: (np.array([0, 2, 5]), np.arange(6.0).reshape(3, 2))}
    taken = take_groups(groups, np.array([2, 3, 5]), 6)
    assert taken[2][0].tolist() == [0, 2] and taken[2][1].tolist() == [[2, 3], [4, 5]]
