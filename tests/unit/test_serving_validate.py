"""Request validation against a signature, and the collector's bound, in tables."""

from __future__ import annotations

import asyncio

import pytest

from mloop.serving.collector import Collector
from mloop.serving.validate import BadRequest, columns_from_v2, frame_from_columns

SIGNATURE = {"inputs": [{"name": "x", "type": "float", "min": 0, "max": 10, "nullable": False},
                        {"name": "colour", "type": "category", "allowedValues": ["red", "blue"]}],
             "output": {"name": "y", "task": "classification", "classes": ["a", "b"]}}


@pytest.mark.parametrize(
    "columns,column,words",
    [
        ({"x": [1.0]}, "colour", "missing input column 'colour'"),
        ({"x": [1.0], "colour": ["red"], "z": [1]}, "z", "unknown input column 'z'"),
        ({"x": ["1"], "colour": ["red"]}, "x", "must be numeric"),
        ({"x": [11.0], "colour": ["red"]}, "x", "outside [0, 10]"),
        ({"x": [None], "colour": ["red"]}, "x", "may not be null"),
        ({"x": [1.0], "colour": ["green"]}, "colour", "'green' at row 0"),
        ({"x": [1.0, 2.0], "colour": ["red"]}, None, "same length"),
        ({"x": [], "colour": []}, None, "between 1 and"),
    ],
)
def test_refusals_name_the_column(columns, column, words) -> None:
    with pytest.raises(BadRequest) as err:
        frame_from_columns(columns, SIGNATURE)
    assert err.value.column == column and words in err.value.message
    assert err.value.body()["error"] == err.value.message


def test_valid_columns_become_a_frame_in_signature_order() -> None:
    frame = frame_from_columns({"colour": ["red", None], "x": [1, 2.5]}, SIGNATURE)
    assert list(frame.columns) == ["x", "colour"] and frame["x"].tolist() == [1.0, 2.5]


def test_v2_tensors_per_column_or_one_matrix() -> None:
    numeric = {"inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]}
    per_column = columns_from_v2([{"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1, 2]},
                                  {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [3, 4]}], numeric)
    matrix = columns_from_v2([{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [[1, 3], [2, 4]]}], numeric)
    assert per_column == matrix == {"a": [1, 2], "b": [3, 4]}
    with pytest.raises(BadRequest):
        columns_from_v2([{"name": "a", "shape": [3, 1], "datatype": "FP64", "data": [1, 2]}], numeric)
    with pytest.raises(BadRequest):
        columns_from_v2([{"name": "a", "shape": [1], "datatype": "FLOAT", "data": [1]}], numeric)


def test_collector_bound_drops_and_counts_and_keeps_what_it_holds() -> None:
    collector = Collector(None, "ns", "m", 1, 1.0, capacity=5, batch_rows=100)
    collector.record_predictions([{"row_id": str(i)} for i in range(3)])
    collector.record_predictions([{"row_id": str(i)} for i in range(3, 8)])
    assert len(collector.predictions.rows) == 5 and collector.predictions.dropped == 3
    assert [r["row_id"] for r in collector.predictions.rows] == ["0", "1", "2", "3", "4"]
    assert asyncio.run(collector.flush(everything=True)) is True  # no store: written means discarded here
    assert collector.predictions.written == 5


def test_sampling_rate_zero_collects_nothing() -> None:
    assert not Collector(None, "ns", "m", 1, 0.0).sampled()
    assert Collector(None, "ns", "m", 1, 1.0).sampled()
