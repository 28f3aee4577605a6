"""Request validation against a signature, OIP v2 tensors (JSON and binary), the runtime choice, worker count,
and the collector's bound, in tables."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from mloop.serving.collector import Collector
from mloop.serving.oip import columns_from_v2, encode_bytes, response, split_body
from mloop.serving.runtime import RuntimeUnavailable, choose_for_manifest
from mloop.serving.server import worker_count
from mloop.serving.validate import BadRequest, check_columns, prepare

SIGNATURE = prepare({"inputs": [{"name": "x", "type": "float", "min": 0, "max": 10, "nullable": False},
                                {"name": "colour", "type": "category", "allowedValues": ["red", "blue"]}],
                     "output": {"name": "y", "task": "classification", "classes": ["a", "b"]}})
EMPTY = memoryview(b"")


@pytest.mark.parametrize(
    "columns,column,words",
    [
        ({"x": [1.0]}, "colour", "missing input column 'colour'"),
        ({"x": [1.0], "colour": ["red"], "z": [1]}, "z", "unknown input column 'z'"),
        ({"x": ["1"], "colour": ["red"]}, "x", "must be numeric; row 0 is '1'"),
        ({"x": [1.0, "long"], "colour": ["red", "red"]}, "x", "must be numeric; row 1 is 'long'"),
        ({"x": [1.0, {"a": 1}], "colour": ["red", "red"]}, "x", "must be numeric; row 1"),
        ({"x": [11.0], "colour": ["red"]}, "x", "outside [0, 10]"),
        ({"x": [None], "colour": ["red"]}, "x", "may not be null"),
        ({"x": [1.0], "colour": ["green"]}, "colour", "'green' at row 0"),
        ({"x": [1.0, 2.0], "colour": ["red"]}, None, "same length"),
        ({"x": [], "colour": []}, None, "between 1 and"),
        ({"x": 1.0, "colour": ["red"]}, "x", "must be a list"),
    ],
)
def test_refusals_name_the_column(columns, column, words) -> None:
    with pytest.raises(BadRequest) as err:
        check_columns(columns, SIGNATURE)
    assert err.value.column == column and words in err.value.message
    assert err.value.body()["error"] == err.value.message and err.value.status == 400


def test_valid_columns_become_arrays_in_signature_order_and_nulls_are_reported() -> None:
    arrays, rows, any_null = check_columns({"colour": ["red", None], "x": [1, 2.5]}, SIGNATURE)
    assert list(arrays) == ["x", "colour"] and rows == 2 and any_null
    assert arrays["x"].dtype == np.float64 and arrays["x"].tolist() == [1.0, 2.5]
    assert arrays["colour"].tolist() == ["red", None]
    assert check_columns({"colour": ["blue"], "x": [3]}, SIGNATURE)[2] is False


def test_v2_tensors_per_column_or_one_matrix() -> None:
    numeric = prepare({"inputs": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]})
    per_column = columns_from_v2([{"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1, 2]},
                                  {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [3, 4]}],
                                 EMPTY, ["a", "b"])
    matrix = columns_from_v2([{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [[1, 3], [2, 4]]}],
                             EMPTY, ["a", "b"])
    for columns in (per_column, matrix):
        arrays, rows, _ = check_columns(columns, numeric)
        assert rows == 2 and arrays["a"].tolist() == [1, 2] and arrays["b"].tolist() == [3, 4]
    with pytest.raises(BadRequest, match="does not match 2 values"):
        columns_from_v2([{"name": "a", "shape": [3, 1], "datatype": "FP64", "data": [1, 2]}], EMPTY, ["a", "b"])
    with pytest.raises(BadRequest, match="unknown datatype 'FLOAT'"):
        columns_from_v2([{"name": "a", "shape": [1], "datatype": "FLOAT", "data": [1]}], EMPTY, ["a", "b"])


def test_binary_tensors_decode_like_their_json_twins() -> None:
    """The body layout tritonclient sends: a JSON header, then raw little-endian tensors in input order."""
    fp64 = np.array([5.1, 6.7], dtype="<f8").tobytes()
    words = encode_bytes(["red", "blue"])
    head = (b'{"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "parameters": {"binary_data_size": 16}},'
            b' {"name": "colour", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": %d}}]}'
            % len(words))
    body, tail = split_body(head + fp64 + words, str(len(head)))
    columns = columns_from_v2(body["inputs"], tail, ["x", "colour"])
    signature = prepare({"inputs": [{"name": "x", "type": "float"}, {"name": "colour", "type": "category"}]})
    arrays, rows, _ = check_columns(columns, signature)
    assert rows == 2 and arrays["x"].tolist() == [5.1, 6.7] and arrays["colour"].tolist() == ["red", "blue"]
    with pytest.raises(BadRequest, match="overruns the binary part"):
        columns_from_v2(body["inputs"], tail[:20], ["x", "colour"])
    with pytest.raises(BadRequest, match="belong to no input"):
        columns_from_v2(body["inputs"], memoryview(bytes(tail) + b"\0"), ["x", "colour"])
    with pytest.raises(BadRequest, match="does not fit a body"):
        split_body(head, str(len(head) + 1))


@pytest.mark.parametrize("parameter,words", [("shared_memory_region", "shared-memory tensors are not supported"),
                                             ("classification", "classification extension is not supported")])
def test_unsupported_request_modes_say_so(parameter, words) -> None:
    with pytest.raises(BadRequest, match=words):
        columns_from_v2([{"name": "a", "shape": [1], "datatype": "FP64", "parameters": {parameter: "r0"}}], EMPTY,
                        ["a"])


def test_binary_response_carries_the_json_length_and_length_prefixed_strings() -> None:
    body, header_length = response({"id": "1"}, [{"name": "predict", "shape": [2], "datatype": "BYTES",
                                                  "data": ["setosa", "virginica"]}], {"predict"})
    assert header_length is not None and b'"binary_data_size":23' in body[:header_length]
    assert body[header_length:] == struct.pack("<I", 6) + b"setosa" + struct.pack("<I", 9) + b"virginica"
    plain, none = response({"id": "1"}, [{"name": "predict", "shape": [1], "datatype": "FP64", "data": [1.5]}], set())
    assert none is None and b'"data":[1.5]' in plain


@pytest.mark.parametrize(
    "requested,manifest,runtime",
    [
        ("auto", {"files": {"model.onnx": {}}, "onnx": {"parity": "exact"}}, "onnx"),
        ("auto", {"files": {"model.onnx": {}}, "onnx": {"parity": "approximate"}}, "sklearn"),
        ("auto", {"files": {"model.onnx": {}}}, "sklearn"),  # packaged before parity was recorded
        ("auto", {"files": {}, "onnx": {"parity": "exact"}}, "sklearn"),
        ("sklearn", {"files": {"model.onnx": {}}, "onnx": {"parity": "exact"}}, "sklearn"),
        ("onnx", {"files": {"model.onnx": {}}, "onnx": {"parity": "exact"}}, "onnx"),
        ("onnx", {"files": {"model.onnx": {}}, "onnx": {"parity": "approximate", "note": "gap 2e-05"}}, None),
    ],
)
def test_runtime_choice(requested, manifest, runtime) -> None:
    if runtime is None:
        with pytest.raises(RuntimeUnavailable, match=r"ONNX parity approximate \(gap 2e-05\)"):
            choose_for_manifest(requested, manifest)
    else:
        assert choose_for_manifest(requested, manifest)[0] == runtime


def test_runtime_reason_says_what_the_package_lacks() -> None:
    not_asked = {"files": {}, "onnx": {"parity": "unavailable", "note": "ONNX not requested"}}
    assert choose_for_manifest("auto", not_asked) == ("sklearn", "the package has no ONNX model")
    failed = {"files": {}, "onnx": {"parity": "failed", "note": "no ONNX converter"}}
    assert choose_for_manifest("auto", failed) == ("sklearn", "ONNX parity failed (no ONNX converter)")


@pytest.mark.parametrize("files,workers", [
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({}, None),
])
def test_workers_follow_the_cpu_limit_or_the_cores(tmp_path, files, workers) -> None:
    """A cgroup folder laid out as the kernel does (v2 cpu.max, or v1's CFS quota)."""
    import os

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cores = len(os.sched_getaffinity(0))
    assert worker_count(str(tmp_path)) == (min(workers, cores) if workers else cores)


@pytest.mark.parametrize("batch_rows", [100, 2])  # 2: the rows span sealed segments and the open one
def test_collector_bound_drops_and_counts_and_keeps_what_it_holds(batch_rows) -> None:
    collector = Collector(None, "ns", "m", 1, 1.0, capacity=5, batch_rows=batch_rows)
    collector.record_predictions([(str(i), "r", 0.0, b"{}", b'"a"') for i in range(3)])
    collector.record_predictions([(str(i), "r", 0.0, b"{}", b'"a"') for i in range(3, 8)])
    assert len(collector.predictions) == 5 and collector.predictions.dropped == 3
    assert [r[0] for r in collector.predictions.values()] == ["0", "1", "2", "3", "4"]
    assert asyncio.run(collector.flush(everything=True)) is True  # no store: written means discarded here
    assert collector.predictions.written == 5 and collector.predictions.batches == (1 if batch_rows == 100 else 2)
    collector.record_predictions([("5", "r", 0.0, b"{}", b'"a"')])  # room again once written
    assert [r[0] for r in collector.predictions.values()] == ["5"] and collector.predictions.dropped == 3


def test_one_row_requests_held_for_encoding_are_bounded_and_buffered_as_record_predictions_buffers_them() -> None:
    """record_one holds rows and encodes them together (every PENDING rows, at a flush, or before a row recorded
    another way, so rows keep the order they were served in): the held rows count against the bound, and what
    reaches the buffer is what record_predictions is given for the same row."""
    import numpy as np
    import orjson

    from mloop.serving.collector import PENDING

    rows = [(f"r{i}", f"r{i}", 1764336140.0 + i, {"x": np.array([float(i)]), "c": np.array(["bleu ✓"], object)},
             "a" if i % 2 else 3) for i in range(PENDING + 3)]
    rows[1][3]["x"][0] = np.nan  # written as null
    held = Collector(None, "ns", "m", 1, 1.0, capacity=PENDING + 2, batch_rows=100)
    given = Collector(None, "ns", "m", 1, 1.0, capacity=PENDING + 2, batch_rows=100)
    for a, b, t, arrays, label in rows:
        held.record_one(a, b, t, arrays, label)
        inputs = orjson.dumps({n: v.item(0) for n, v in arrays.items()})
        given.record_predictions([(a, b, t, inputs, orjson.dumps(label))])
    assert len(held.predictions) == PENDING and len(held.pending) == 2  # 256 encoded at once, 2 held, 1 dropped
    assert held.predictions.dropped == given.predictions.dropped == 1
    asyncio.run(held.flush(everything=True))  # a flush encodes what is held first; no store: written means discarded
    assert held.predictions.written == PENDING + 2 and not held.pending
    held = Collector(None, "ns", "m", 1, 1.0, capacity=PENDING + 2, batch_rows=100)
    for a, b, t, arrays, label in rows[:5]:
        held.record_one(a, b, t, arrays, label)
    held.record_predictions([("m-0", "m", 1764336200.0, b'{"x":9.0}', b'"b"')])  # encodes the held rows first
    assert [r[0] for r in held.predictions.values()] == ["r0", "r1", "r2", "r3", "r4", "m-0"]
    assert held.predictions.values()[:5] == given.predictions.values()[:5]
    assert held.predictions.values()[1][3] == '{"x":null,"c":"bleu ✓"}'


def test_sampling_rate_zero_collects_nothing() -> None:
    assert not Collector(None, "ns", "m", 1, 0.0).sampled()
    assert Collector(None, "ns", "m", 1, 1.0).sampled()


def test_collected_rows_reach_parquet_unchanged_through_the_column_buffers() -> None:
    """Rows wait as bytes in Arrow column buffers; the Parquet file holds what the request path gave, in the
    schema the collection Dataset ingests: unicode ids, a null input, whole and fractional seconds, rows across
    several sealed segments."""
    import io
    from datetime import datetime, timezone

    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    constants = {"model": "m", "version": 1, "package": "m-1", "stage": "Production"}
    collector = Collector(None, "ns", "m", 1, 1.0, capacity=10, batch_rows=2, constants=constants)
    rows = [("ünï-😀", "réq", 1764336140.0, {"x": None, "colour": "bleu ✓"}, "a"),
            ("b\ud800", "r", 1764336140.123456, {"x": 1.5, "colour": "red"}, "b"),  # a lone surrogate: replaced
            ("c", "r", 1764336140.9999996, {"x": 2.0, "colour": "blue"}, 3)]
    collector.record_predictions([(a, b, t, orjson.dumps(i), orjson.dumps(p)) for a, b, t, i, p in rows])
    assert len(collector.predictions.sealed) == 1 and len(collector.predictions) == 3
    got = []
    while (batch := collector.predictions.next_batch(2, True)) is not None:
        sink = io.BytesIO()
        pq.write_table(collector.predictions.table(batch, constants), sink, compression="zstd")
        got.append(pq.read_table(io.BytesIO(sink.getvalue())))
        collector.predictions.written_batch(batch)
    table = pa.concat_tables(got)
    assert table.schema == pa.schema([(n, pa.string()) for n in ("row_id", "request_id", "served_at", "model")] +
                                     [("version", pa.int64())] +
                                     [(n, pa.string()) for n in ("package", "stage", "inputs", "prediction")])
    assert table.to_pylist() == [
        {"row_id": a.encode("utf-8", "replace").decode(), "request_id": b,
         "served_at": datetime.fromtimestamp(t, timezone.utc).isoformat(), **constants,
         "inputs": orjson.dumps(i).decode(), "prediction": orjson.dumps(p).decode()} for a, b, t, i, p in rows]
    assert table.column("served_at").to_pylist()[::2] == ["2025-11-28T13:22:20+00:00", "2025-11-28T13:22:21+00:00"]
    assert len(collector.predictions) == 0
