"""A collection source (a model's collected predictions and feedback) against real S3 (versitygw): it streams,
joins and orders its rows the same whatever the batch size and partition count, as the whole-table reading did,
and ingests under an address-space cap where reading it whole does not fit."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mloop.api.tasks import IngestTaskSpec
from mloop.data.canonical import canonical_table, digest_table
from mloop.storage.artifacts import Store
from mloop.workloads import ingest

from tests.integration.test_dataset_streaming import CAP, INGEST, _capped, _capped_env

LOG = logging.getLogger("test")
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
SIGNATURE = {"inputs": [{"name": "x", "type": "float"}, {"name": "n", "type": "integer"},
                        {"name": "colour", "type": "string"}], "output": {"name": "kind", "task": "classification"}}


def prediction_file(rng: np.random.Generator, ids: np.ndarray, version: int, stage: str,
                    float_every: int = 0, one_request: bool = False) -> bytes:
    """Rows as the collector writes them; served_at jumps about so files interleave in time (or, for one batched
    request, is the same on every row: then row_id orders them)."""
    seconds = rng.uniform(0, 86_400, 1 if one_request else len(ids)).round(6)
    when = [START + timedelta(seconds=float(s)) for s in np.resize(seconds, len(ids))]
    inputs = [json.dumps({"x": float(i % 97) / 7, "n": int(i % 13) + (0.5 if float_every and i % float_every == 0 else 0),
                          "colour": ["red", "blue"][i % 2], "extra": 1}) for i in ids.tolist()]
    table = pa.table({"row_id": [f"r{i:07d}" for i in ids], "request_id": [f"q{i}" for i in ids],
                      "served_at": [w.isoformat() for w in when], "model": ["m"] * len(ids),
                      "version": [version] * len(ids), "package": [f"m-{version}"] * len(ids),
                      "stage": [stage] * len(ids), "inputs": inputs, "prediction": ['"a"'] * len(ids)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def feedback_file(ids: np.ndarray, label: str) -> bytes:
    table = pa.table({"row_id": [f"r{i:07d}" for i in ids], "label": [json.dumps(f"{label}{i % 3}") for i in ids],
                      "received_at": [START.isoformat()] * len(ids), "model": ["m"] * len(ids)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def whole_table(store: Store, namespace: str) -> pd.DataFrame:
    """The reference: how ingest read a collection before it streamed (every file whole, pandas merge and sort)."""
    def read(prefix: str) -> pd.DataFrame:
        return pd.concat([pq.read_table(io.BytesIO(store.get(k))).to_pandas() for k in sorted(store.list_keys(prefix))],
                         ignore_index=True)
    predictions, feedback = read(f"collected/{namespace}/m/"), read(f"feedback/{namespace}/m/")
    predictions = predictions[~predictions["stage"].astype(str).str.startswith("shadow-")]
    labels = feedback.drop_duplicates("row_id", keep="last")[["row_id", "label"]]
    joined = predictions.drop_duplicates("row_id").merge(labels, on="row_id", how="inner")
    inputs = pd.DataFrame([json.loads(x) for x in joined["inputs"]])
    frame = pd.concat([joined[["row_id"]].reset_index(drop=True),
                       pd.to_datetime(joined["served_at"], utc=True).rename("served_at").reset_index(drop=True),
                       inputs[["x", "n", "colour"]].reset_index(drop=True),
                       joined["label"].map(json.loads).rename("kind").reset_index(drop=True)], axis=1)
    return frame.sort_values(["served_at", "row_id"]).reset_index(drop=True)


def put_collection(s3, namespace: str, float_every: int = 0) -> None:
    rng = np.random.default_rng(7)
    for version in (1, 2):
        s3.client.put_object(Bucket=s3.bucket, Key=f"packages/{namespace}/m/{version}/signature.json",
                             Body=json.dumps(SIGNATURE).encode())
    files = {f"collected/{namespace}/m/1/2026/11/01/0000{i:02d}-a.parquet":
             prediction_file(rng, np.arange(i * 400, (i + 1) * 400), 1, "Production", float_every) for i in range(6)}
    # version 2 served some of the same row ids again (the first prediction counts) and a shadow scored others
    files[f"collected/{namespace}/m/2/2026/11/01/000100-b.parquet"] = prediction_file(
        rng, np.arange(2000, 2800), 2, "Production", float_every)
    files[f"collected/{namespace}/m/2/2026/11/01/000102-r.parquet"] = prediction_file(
        rng, rng.permutation(np.arange(2800, 3000)), 2, "Production", one_request=True)
    files[f"collected/{namespace}/m/2/2026/11/01/000101-s.parquet"] = prediction_file(
        rng, np.arange(3000, 3300), 2, "shadow-3")
    files[f"feedback/{namespace}/m/2026/11/01/000200-a.parquet"] = feedback_file(np.arange(0, 2000, 2), "old")
    files[f"feedback/{namespace}/m/2026/11/01/000300-b.parquet"] = feedback_file(np.arange(0, 3300, 3), "new")
    for key, body in files.items():
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body)


@pytest.mark.parametrize("float_every", [0, 1000])
def test_a_collection_streams_to_the_same_version_in_any_batching(s3, monkeypatch: pytest.MonkeyPatch,
                                                                   float_every: int) -> None:
    """6 + 3 prediction files (one a single batched request) and 2 feedback files: 16 KiB blocks (batches of about a hundred rows, 256
    partitions) and one block for everything cut the same version, equal to the whole-table join. With float_every, `n` is
    an integer in most batches and a float in a few, so the small batches read the table again with n float."""
    namespace = f"coll{float_every}"
    put_collection(s3, namespace, float_every)
    store = Store(s3.client, s3.bucket)
    spec = {"source": {"collection": {"model": "m", "minNewRows": 1}}}
    versions = []
    for block in (16 << 10, 1 << 30):
        monkeypatch.setattr(ingest.pipeline, "block_bytes", lambda block=block: block)
        result = ingest.cut_version(IngestTaskSpec(namespace=namespace, name=f"c{block}", spec=spec), store, LOG)
        assert result.status == "Succeeded", result.message
        versions.append(result.version)
    reference = whole_table(store, namespace)
    assert len(reference) == result.rows > 1000
    assert versions == [digest_table(canonical_table(reference)).version] * 2
    assert result.source_version == "collected:m:m-1,m-2"
    table = pq.read_table(io.BytesIO(store.get(f"datasets/{namespace}/c{1 << 30}/{result.digest[7:]}/data.parquet")))
    assert table.column_names == ["row_id", "served_at", "x", "n", "colour", "kind"]
    assert str(table.schema.field("n").type) == ("double" if float_every else "int64")
    first = table.slice(0, 1).to_pylist()[0]
    assert first["row_id"] == reference["row_id"][0] and first["kind"] == reference["kind"][0]


def test_a_collection_larger_than_the_memory_cap_ingests(s3, tmp_path) -> None:
    """700,000 labelled predictions in 70 files (and their labels in 70 more): read whole and joined in pandas
    (as ingest did) they do not fit under the cap; streamed, they do."""
    namespace = "collbig"
    s3.client.put_object(Bucket=s3.bucket, Key=f"packages/{namespace}/m/1/signature.json",
                         Body=json.dumps(SIGNATURE).encode())
    rng = np.random.default_rng(3)
    rows, per_file = 700_000, 10_000
    for i, start in enumerate(range(0, rows, per_file)):
        ids = np.arange(start, start + per_file)
        s3.client.put_object(Bucket=s3.bucket, Key=f"collected/{namespace}/m/1/2026/11/01/{i:06d}-a.parquet",
                             Body=prediction_file(rng, ids, 1, "Production"))
        s3.client.put_object(Bucket=s3.bucket, Key=f"feedback/{namespace}/m/2026/11/01/{i:06d}-a.parquet",
                             Body=feedback_file(ids, "k"))
    env = _capped_env(s3)
    old = subprocess.run([sys.executable, "-c", OLD_COLLECTION, namespace], env=env, preexec_fn=_capped,
                         capture_output=True, text=True, timeout=600)
    assert old.returncode != 0 and ("MemoryError" in old.stderr or "out of memory" in old.stderr), \
        (old.stdout, old.stderr[-2000:])
    spec = {"source": {"collection": {"model": "m", "minNewRows": 1}}, "validation": {"unique": ["row_id"]}}
    task = IngestTaskSpec(namespace=namespace, name="big", spec=spec).to_wire()
    new = subprocess.run([sys.executable, "-c", INGEST, json.dumps(task)], env=env, preexec_fn=_capped,
                         capture_output=True, text=True, timeout=900)
    assert new.returncode == 0, new.stderr[-3000:]
    out = json.loads(new.stdout.strip().splitlines()[-1])
    assert out["result"]["status"] == "Succeeded" and out["result"]["rows"] == rows, out["result"]
    assert out["peak_mb"] * (1 << 20) < CAP


OLD_COLLECTION = """
import io, json, sys
import pandas as pd
import pyarrow.parquet as pq
from mloop.storage.artifacts import Store
store, ns = Store.from_settings(), sys.argv[1]
read = lambda prefix: pd.concat([pq.read_table(io.BytesIO(store.get(k))).to_pandas()
                                 for k in sorted(store.list_keys(prefix))], ignore_index=True)
predictions, feedback = read(f"collected/{ns}/m/"), read(f"feedback/{ns}/m/")
joined = predictions.drop_duplicates("row_id").merge(feedback[["row_id", "label"]], on="row_id")
inputs = pd.DataFrame([json.loads(x) for x in joined["inputs"]])  # what ingest did before: all of it at once
print(len(inputs))
"""
