"""A batch's vectors as matrices: grouped by length, clipped to float32, base64 decoded and checked per batch."""

import base64

import numpy as np
import orjson

from monitor.detect.parsing import parse_batch
from monitor.detect.vectors import encoded_groups, list_groups, take_groups


def b64(values, dtype="<f4"):
    return base64.b64encode(np.asarray(values, dtype).tobytes()).decode()


def test_lists_grouped_by_length_and_clipped_to_float32():
    groups = list_groups([[1e308, -1e308], None, [0.5, 2, 3], [1, 2]])
    assert groups[2][0].tolist() == [0, 3] and np.isfinite(groups[2][1]).all()
    assert groups[2][1][0, 0] == np.finfo(np.float32).max and groups[3][1].dtype == np.float32


def test_encoded_groups_decode_each_dtype_and_reject_what_does_not_decode():
    strings = [b64([1.5, 2.0], "<f2"), b64([1, 2, 3]), "not base64!", b64([np.inf, 1]), b64([4, 5, 6]), None]
    dtypes = ["float16", "float32", "float32", "float32", "float32", "float32"]
    groups, rejected = encoded_groups(strings, dtypes)
    assert groups[2][0].tolist() == [0] and groups[2][1].tolist() == [[1.5, 2.0]]
    assert groups[3][0].tolist() == [1, 4] and groups[3][1].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert set(rejected) == {2, 3} and "base64" in rejected[2] and "finite" in rejected[3]


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
