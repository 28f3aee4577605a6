"""Streaming ingest against real S3 (versitygw): bad data in the last batch fails cleanly, a prefix of parts
is one table, and a file bigger than the process may hold ingests under a hard address-space cap, and so does
a union of two of its versions."""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mloop.api.tasks import IngestTaskSpec
from mloop.storage.artifacts import Store
from mloop.workloads.ingest import cut_version

LOG = logging.getLogger("test")


def listing(s3, prefix: str) -> dict[str, str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def csv_rows(start: int, stop: int) -> bytes:
    ids = np.arange(start, stop)
    table = pa.table({"id": ids, "n": ids % 1000, "x": (ids % 997) / 997.0, "c": np.array(["a", "b", "c"])[ids % 3]})
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=start == 0))
    return sink.getvalue()


SCHEMA = {"columns": [{"name": "id", "type": "integer", "nullable": False}, {"name": "n", "type": "integer"},
                      {"name": "x", "type": "float", "min": 0, "max": 1},
                      {"name": "c", "type": "category", "allowedValues": ["a", "b", "c"]}]}


def test_a_file_that_turns_bad_in_its_last_batch_fails_and_leaves_nothing(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOOP_MEMORY_LIMIT", str(64 << 20))  # 1 MiB blocks: the file is read in many batches
    store, key, rows = Store(s3.client, s3.bucket), "streaming/turns-bad.csv", 200_000
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=csv_rows(0, rows))
    spec = {"source": {"s3": {"uri": f"s3://{s3.bucket}/{key}"}}, "schema": SCHEMA, "validation": {"unique": ["id"]}}
    good = cut_version(IngestTaskSpec(namespace="stream", name="turns-bad", spec=spec), store, LOG)
    assert good.status == "Succeeded" and good.rows == rows, good.message
    before = listing(s3, "datasets/stream/turns-bad/")
    assert len(before) == 3

    data = csv_rows(0, rows)
    bad = data[:data.rindex(b"\n", 0, len(data) - 1) + 1] + f"{rows - 1},oops,0.5,a\n".encode()
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bad)
    failed = cut_version(IngestTaskSpec(namespace="stream", name="turns-bad", spec=spec, previous=good.digest[7:]),
                         store, LOG)
    assert (failed.status, failed.reason) == ("Failed", "ValidationFailed")
    assert failed.message == f"column 'n' is declared integer but rows {rows - 1} hold ['oops']"
    assert [c for c in failed.validation if not c["passed"]][0]["column"] == "n"
    assert failed.version is None and failed.rows == rows
    assert listing(s3, "datasets/stream/turns-bad/") == before  # no partial version; the earlier one untouched
    manifest = store.get_json(f"datasets/stream/turns-bad/{good.digest[7:]}/manifest.json")
    data_file = store.get(f"datasets/stream/turns-bad/{good.digest[7:]}/data.parquet",
                          expected_sha256=manifest["files"]["data.parquet"]["sha256"])
    assert pq.read_table(io.BytesIO(data_file)).num_rows == rows


def test_a_prefix_of_parts_is_one_table_with_one_type_per_column(s3) -> None:
    store = Store(s3.client, s3.bucket)
    first, second = csv_rows(0, 50_000), csv_rows(50_000, 100_000)
    header = first.split(b"\n", 1)[0] + b"\n"
    second = header + second.replace(b"\n99999,999,", b"\n99999,999.5,")  # the last part widens n to float
    s3.client.put_object(Bucket=s3.bucket, Key="streaming/parts/part-0.csv", Body=first)
    s3.client.put_object(Bucket=s3.bucket, Key="streaming/parts/part-1.csv", Body=second)
    spec = {"source": {"s3": {"uri": f"s3://{s3.bucket}/streaming/parts/"}}}
    result = cut_version(IngestTaskSpec(namespace="stream", name="parts", spec=spec), store, LOG)
    assert result.status == "Succeeded" and result.rows == 100_000, result.message
    assert result.source_version.endswith("(2 objects)")
    assert {c["name"]: c["type"] for c in result.columns}["n"] == "float"
    table = pq.read_table(io.BytesIO(store.get(f"datasets/stream/parts/{result.digest[7:]}/data.parquet")))
    assert table.column("n")[99_999].as_py() == 999.5 and table.column("n")[3].as_py() == 3.0

    # the same rows as one Parquet object give the same version
    one = io.BytesIO()
    pq.write_table(table, one, row_group_size=4096)
    s3.client.put_object(Bucket=s3.bucket, Key="streaming/parts.parquet", Body=one.getvalue())
    again = cut_version(IngestTaskSpec(namespace="stream", name="parts-pq", spec={
        "source": {"s3": {"uri": f"s3://{s3.bucket}/streaming/parts.parquet"}}}), store, LOG)
    assert again.version == result.version


CAP = 768 << 20  # address space, not resident memory: see _capped
BIG_ROWS = 1_500_000


def _capped() -> None:
    """RLIMIT_AS counts reserved address space: 1 MiB thread stacks keep a few idle threads from using it up."""
    resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def _capped_env(s3) -> dict[str, str]:
    return {**os.environ, "MLOOP_S3_ENDPOINT": s3.endpoint, "MLOOP_S3_ACCESS_KEY": s3.access_key,
            "MLOOP_S3_SECRET_KEY": s3.secret_key, "MLOOP_BUCKET": s3.bucket,
            # glibc's malloc and Arrow's jemalloc reserve address space they never touch; under RLIMIT_AS
            # the process uses the system allocator with two arenas (a cgroup limit would not need this)
            "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "1048576"}


INGEST = """
import json, logging, resource, sys
from mloop.api.tasks import IngestTaskSpec
from mloop.storage.artifacts import Store
from mloop.workloads.ingest import cut_version
result = cut_version(IngestTaskSpec.model_validate(json.loads(sys.argv[1])), Store.from_settings(), logging.getLogger())
print(json.dumps({"result": result.to_wire(), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OLD_PATH = """
import io, sys
import pandas as pd
from mloop.storage.artifacts import Store
store = Store.from_settings()
frame = pd.read_csv(io.BytesIO(store.get(sys.argv[1])))  # what ingest did before: the object whole, then a frame
print(len(frame))
"""


def test_a_file_bigger_than_the_memory_cap_ingests(s3, tmp_path: Path) -> None:
    key = "streaming/big.csv"
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:
        for start in range(0, BIG_ROWS, 100_000):
            ids = np.arange(start, start + 100_000)
            columns = {"id": ids, **{f"f{i}": np.sin(ids * (i + 1) * 0.001) * 100 for i in range(10)},
                       **{f"i{i}": (ids * (i + 7)) % 1000 for i in range(5)},
                       **{f"c{i}": np.array(["red", "green", "blue", "amber"])[(ids + i) % 4] for i in range(4)}}
            pacsv.write_csv(pa.table(columns), f, write_options=pacsv.WriteOptions(include_header=start == 0))
    size = path.stat().st_size
    assert size > 300e6  # with the bytes and the frame, the old way needs more than the cap
    s3.client.upload_file(str(path), s3.bucket, key)
    path.unlink()
    env = _capped_env(s3)

    old = subprocess.run([sys.executable, "-c", OLD_PATH, key], env=env, preexec_fn=_capped, capture_output=True,
                         text=True, timeout=600)
    assert old.returncode != 0 and ("MemoryError" in old.stderr or "out of memory" in old.stderr), \
        (old.stdout, old.stderr[-2000:])  # the cap bites: the old way of reading does not fit

    spec = {"source": {"s3": {"uri": f"s3://{s3.bucket}/{key}"}}, "validation": {"unique": ["id"], "minRows": 1000}}
    task = IngestTaskSpec(namespace="stream", name="big", spec=spec).to_wire()
    new = subprocess.run([sys.executable, "-c", INGEST, json.dumps(task)], env=env, preexec_fn=_capped,
                         capture_output=True, text=True, timeout=900)
    assert new.returncode == 0, new.stderr[-3000:]
    out = json.loads(new.stdout.strip().splitlines()[-1])
    result = out["result"]
    assert result["status"] == "Succeeded" and result["rows"] == BIG_ROWS, result
    assert out["peak_mb"] * (1 << 20) < CAP
    store = Store(s3.client, s3.bucket)
    manifest = store.get_json(f"datasets/stream/big/{result['digest'][7:]}/manifest.json")
    assert manifest["rows"] == BIG_ROWS and manifest["files"]["data.parquet"]["size"] > 16 << 20  # a multipart upload
    meta = pq.ParquetFile(io.BytesIO(store.get(f"datasets/stream/big/{result['digest'][7:]}/data.parquet",
                                               expected_sha256=manifest["files"]["data.parquet"]["sha256"]))).metadata
    assert meta.num_rows == BIG_ROWS and meta.num_row_groups > 10  # written a row group at a time

    # A union of that version with itself, filtered: the parents are streamed too, where reading them whole (as
    # ingestion did before) does not fit under the same cap.
    pin = {"namespace": "stream", "name": "big", "digest": result["digest"][7:]}
    parent_prefix = f"datasets/stream/big/{pin['digest']}/"
    old = subprocess.run([sys.executable, "-c", OLD_UNION, parent_prefix], env=env, preexec_fn=_capped,
                         capture_output=True, text=True, timeout=600)
    assert old.returncode != 0 and ("MemoryError" in old.stderr or "out of memory" in old.stderr), \
        (old.stdout, old.stderr[-2000:])
    union = {"source": {"derived": {"union": {"datasets": [{"name": "big"}, {"name": "big"}]},
                                    "transform": {"filter": "i0 < 500", "drop": ["c3"]}}}}
    task = IngestTaskSpec(namespace="stream", name="twice", spec=union, parents=[pin, pin]).to_wire()
    new = subprocess.run([sys.executable, "-c", INGEST, json.dumps(task)], env=env, preexec_fn=_capped,
                         capture_output=True, text=True, timeout=900)
    assert new.returncode == 0, new.stderr[-3000:]
    out = json.loads(new.stdout.strip().splitlines()[-1])
    twice = out["result"]
    assert twice["status"] == "Succeeded", twice
    assert twice["rows"] == 2 * int(((np.arange(BIG_ROWS) * 7) % 1000 < 500).sum())
    assert [c["name"] for c in twice["columns"]] == [c["name"] for c in result["columns"] if c["name"] != "c3"]
    assert out["peak_mb"] * (1 << 20) < CAP


OLD_UNION = """
import io, sys
import pandas as pd
import pyarrow.parquet as pq
from mloop.storage.artifacts import Store
store = Store.from_settings()
parents = [pq.read_table(io.BytesIO(store.get(sys.argv[1] + "data.parquet"))).to_pandas() for _ in range(2)]
print(len(pd.concat(parents, ignore_index=True)))  # what ingest did before: every parent whole, then the union
"""
