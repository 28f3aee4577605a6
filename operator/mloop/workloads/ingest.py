"""The ingest task: read a Dataset's source, check it, and cut an immutable, content-addressed version.

    python -m mloop.workloads.ingest <task prefix in the bucket>
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mloop.api.dataset import DatasetSpec, DerivedSource
from mloop.api.tasks import IngestResult, IngestTaskSpec
from mloop.data import collection, parents, pipeline
from mloop.data.drift import drift, same_grid
from mloop.data.erasure import drop_erased, load_filters
from mloop.data.errors import DataError
from mloop.data.profile import SKETCH, Profiler, summary
from mloop.data.tables import TypeConflict, load_builtin, load_inline, s3_batches
from mloop.storage.artifacts import AlreadyExists, Store, sha256_hex
from mloop.storage.layout import collected_prefix, dataset_prefix, feedback_prefix, package_prefix
from mloop.workloads.task import main_for, now_iso


def load_source(spec: DatasetSpec, task: IngestTaskSpec, store: Store) -> tuple[pd.DataFrame, str | None]:
    source = spec.source
    if source.builtin:
        return load_builtin(source.builtin), f"builtin:{source.builtin.name}"
    if source.inline:
        return load_inline(source.inline), "inline"
    raise DataError("UnsupportedSource", "this source kind is not ingested by the ingest task")


def derived_batches(source: DerivedSource, task: IngestTaskSpec, store: Store, scratch: str,
                    block: int) -> tuple[parents.Batches, str]:
    """A derived source as a stream of batches: each pinned parent version spooled to `scratch` (digest checked)
    and read a row group at a time. Returns the stream and what it was made from (name@version,...)."""
    pins = task.parents or ([task.parent] if task.parent else [])
    if len(pins) != len(source.parents()):
        raise DataError("WaitingForParent", "the task was started without every parent version")
    read = []
    for i, pin in enumerate(pins):
        path = parents.spool_version(store, dataset_prefix(pin.namespace, pin.name, pin.digest),
                                     os.path.join(scratch, f"parent-{i}.parquet"))
        read.append(parents.Parent.open(pin.name, path))
    label = ",".join(f"{p.name}@{p.digest[:12]}" for p in pins)
    return parents.derived(source, read, parents.rows_per_batch(read, block)), label


def _listed(store: Store, prefix: str) -> list[tuple[str, int]]:
    """The Parquet files under a prefix, in key order, with their sizes."""
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
    return sorted((o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])
                  if o["Key"].endswith(".parquet"))


@dataclass
class Collected:
    """A collection source joined on local disk, ready to be read in batches any number of times."""

    joined: collection.Joined
    label: str
    inputs: list[str]
    target: str
    rows_per_batch: int

    def batches(self, forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        if self.joined.rows == 0:  # nothing labelled yet: an empty table, as before
            return pipeline.frame_batches(pd.DataFrame(), 1)
        return collection.shaped(self.joined.batches(self.rows_per_batch), self.inputs, self.target, forced)


def gather_collection(source: Any, namespace: str, store: Store, scratch: str, block: int) -> Collected:
    """Served predictions joined with the labels that came back (data/collection: scattered by row id, joined a
    partition at a time, merged in served order). Each file is read whole: the collector writes at most a
    batch of rows per file."""
    predictions = _listed(store, collected_prefix(namespace, source.model))
    feedback = _listed(store, feedback_prefix(namespace, source.model))
    partitions = collection.partition_count(sum(size for _, size in predictions + feedback), block * JOIN_BLOCKS)
    rows_per_batch = max(1, block // 512)  # until the joined rows say how wide they are
    joined = collection.Joined()
    if predictions and feedback:
        def read(files: list[tuple[str, int]]) -> Iterator[pa.Table]:
            return (pq.read_table(io.BytesIO(store.get(key))) for key, _ in files)

        joined = collection.join(read(predictions), read(feedback), source.stage, partitions, scratch, rows_per_batch)
    empty = f"collected:{source.model}:"
    if joined.rows == 0:
        return Collected(joined, empty, [], "", 1)
    signature = store.get_json(package_prefix(namespace, source.model, joined.version) + "signature.json")
    rows_per_batch = max(1, block // max(1, joined.bytes // joined.rows))
    return Collected(joined, f"collected:{source.model}:{','.join(sorted(joined.packages))}",
                     [i["name"] for i in signature["inputs"]], signature["output"]["name"], rows_per_batch)


def _kept_rows(open_batches: Any, drop: Any) -> int:
    """Rows left once standing erasure filters drop theirs: a counting pass (only when filters exist)."""
    forced: dict[str, pa.DataType] = {}
    while True:
        try:
            return sum(len(drop(batch.to_pandas())[0]) for batch in open_batches(forced))
        except TypeConflict as conflict:
            if forced.get(conflict.column) == conflict.type:
                raise
            forced[conflict.column] = conflict.type


def ingest(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    return cut_version(IngestTaskSpec.model_validate(raw), store, log).to_wire()


def _source_label(source: Any, keys: list[str]) -> str:
    return f"{source.uri} ({len(keys)} object{'s' if len(keys) != 1 else ''})"


def cut_version(task: IngestTaskSpec, store: Store, log: logging.Logger) -> IngestResult:
    with tempfile.TemporaryDirectory(prefix="mloop-parents-") as spool:  # derived sources' parent versions
        return _cut_version(task, store, log, spool)


def _cut_version(task: IngestTaskSpec, store: Store, log: logging.Logger, spool: str) -> IngestResult:
    spec = DatasetSpec.model_validate(task.spec)
    namespace, name = task.namespace, task.name
    block = pipeline.block_bytes()
    filters = load_filters(store, namespace, name)
    try:
        if spec.source.s3 is not None:  # files are streamed: memory follows the block size, not the data
            s3 = spec.source.s3
            declared = pipeline.declared_types(spec.schema_)
            keys, _ = s3_batches(s3, store.client, block, {}, declared)
            source_version = _source_label(s3, keys)
            log.info("streaming %s in blocks of %d MiB", source_version, block >> 20)

            def open_batches(forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
                return s3_batches(s3, store.client, block, forced, declared)[1]

            def drop(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
                return drop_erased(frame, filters) if filters else (frame, 0)
        elif spec.source.derived is not None:  # parents are streamed too, a row group at a time
            stream, source_version = derived_batches(spec.source.derived, task, store, spool, block)
            log.info("streaming %s in blocks of %d MiB", source_version, block >> 20)

            def open_batches(forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
                return stream()

            def drop(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
                return drop_erased(frame, filters) if filters else (frame, 0)
        elif spec.source.collection is not None:  # many small files: scattered by row id, joined, merged
            collected = gather_collection(spec.source.collection, namespace, store, spool, block)
            source_version = collected.label
            log.info("joined %d labelled predictions from %s in %d partitions, read in batches of %d rows",
                     collected.joined.rows, source_version, len(collected.joined.runs), collected.rows_per_batch)

            def open_batches(forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
                return collected.batches(forced)

            def drop(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
                return drop_erased(frame, filters) if filters else (frame, 0)

            # erased subjects never come back, and do not count as new rows
            rows = _kept_rows(open_batches, drop) if filters and collected.joined.rows else collected.joined.rows
            new_rows = rows - task.previous_rows
            if new_rows < spec.source.collection.min_new_rows:
                return IngestResult(status="Skipped", reason="NotEnoughRows", source_version=source_version,
                                    message=f"{max(new_rows, 0)} new labelled rows, "
                                            f"{spec.source.collection.min_new_rows} needed")
        else:
            frame, source_version = load_source(spec, task, store)
            log.info("read %d rows x %d columns from %s", len(frame), frame.shape[1], source_version)
            frame, erased = drop_erased(frame, filters)
            if erased:  # the source still holds subjects an ErasureRequest erased: they never come back
                log.info("%d rows of erased subjects dropped by standing filters", erased)
            rows_per_batch = max(1, block // max(1, int(frame.memory_usage(deep=False).sum() // max(1, len(frame)))))

            def open_batches(forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
                return pipeline.frame_batches(frame, rows_per_batch)

            drop = None  # type: ignore[assignment]
    except DataError as err:
        log.error("%s: %s", err.reason, err.message)
        return IngestResult(status="Failed", reason=err.reason, message=err.message)

    with tempfile.TemporaryDirectory(prefix="mloop-ingest-") as scratch:
        out = os.path.join(scratch, "data.parquet")
        forced: dict[str, pa.DataType] = {}
        while True:
            try:
                cut = pipeline.run(open_batches(forced), spec.schema_, spec.validation, out, drop)
                break
            except TypeConflict as conflict:  # a column's type changed part-way: read again with the wider type
                if conflict.column in forced and forced[conflict.column] == conflict.type:
                    return IngestResult(status="Failed", reason="UnreadableFile", source_version=source_version,
                                        message=f"column {conflict.column!r}: {conflict.why}"[:1024])
                log.info("reading again: %s", conflict)
                forced[conflict.column] = conflict.type
            except DataError as err:
                log.error("%s: %s", err.reason, err.message)
                return IngestResult(status="Failed", reason=err.reason, message=err.message,
                                    source_version=source_version)
        if cut.erased:
            log.info("%d rows of erased subjects dropped by standing filters", cut.erased)
        log.info("checked %d rows x %d columns", cut.rows, len(cut.columns))
        base: dict[str, Any] = {
            "rows": cut.rows,
            "columns": [c.to_wire() for c in cut.columns],
            "validation": [{"rule": c.rule, **({"column": str(c.column)} if c.column is not None else {}),
                            "passed": c.passed, "message": c.message[:512]} for c in cut.checks],
            "source_version": source_version,
            "parents": task.parents or ([task.parent] if task.parent else None),
        }
        failed = cut.first_failure()
        if failed is not None or cut.digest is None or cut.profile is None:
            reason = "EmptyTable" if failed is not None and failed.rule == "minRows" and cut.rows == 0 \
                else "ValidationFailed"
            message = failed.message if failed is not None else "no rows to cut a version from"
            log.error("validation failed: %s", message)
            return IngestResult(status="Failed", reason=reason, message=message, **base)
        digest, profile = cut.digest, cut.profile
        prefix = dataset_prefix(namespace, name, digest.hexdigest)
        existing = store.get_json_or_none(prefix + "manifest.json")
        created = existing is None
        if created:
            files = {"data.parquet": _put_file(store, prefix + "data.parquet", out)}
            body = json.dumps(profile, separators=(",", ":")).encode()  # compact: sketches hold thousands of pairs
            try:
                files["profile.json"] = {"sha256": store.put(prefix + "profile.json", body), "size": len(body)}
            except AlreadyExists:  # a crashed earlier attempt wrote it; same digest, same content
                files["profile.json"] = {"sha256": sha256_hex(store.get(prefix + "profile.json")), "size": len(body)}
            manifest = {
                "kind": "DatasetVersion", "namespace": namespace, "dataset": name, "digest": digest.full,
                "version": digest.version, "rows": cut.rows, "columns": base["columns"], "files": files,
                "source": source_version, "createdAt": now_iso(),
            }
            try:
                store.put_json(prefix + "manifest.json", manifest)
            except AlreadyExists:
                manifest = store.get_json(prefix + "manifest.json")
                created = False
            log.info("cut version %s (%d rows)", digest.version, cut.rows)
        else:
            manifest = existing
            log.info("content unchanged: version %s already exists", digest.version)

    result = IngestResult(status="Succeeded", reason="VersionCut" if created else "Unchanged",
                          message=f"version {digest.version}: {cut.rows} rows" + ("" if created else " (unchanged)"),
                          version=digest.version, digest=digest.full, uri=store.uri(prefix), created=created,
                          created_at=manifest["createdAt"], profile=summary(profile), **base)
    previous = task.previous
    if previous and previous != digest.hexdigest:
        try:
            result.drift = drift(version_profile(store, dataset_prefix(namespace, name, previous)), profile)
        except Exception as err:  # drift is informative; a missing previous version must not fail ingestion
            log.warning("no drift against %s: %s", previous[:12], err)
    return result


JOIN_BLOCKS = 8  # a collection partition is joined in memory within this many reader blocks

PART = 16 * 1024 * 1024  # parts are read one at a time: the upload stays inside the memory bound


def _put_file(store: Store, key: str, path: str) -> dict[str, Any]:
    """Upload a local file write-once: small files in one request, large ones in parts (never whole in memory).
    A file an earlier, crashed attempt already wrote is kept: same digest, same rows."""
    size = os.path.getsize(path)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            sha.update(chunk)
    if size <= PART:
        with open(path, "rb") as f:
            data = f.read()
        try:
            return {"sha256": store.put(key, data), "size": size}
        except AlreadyExists:
            return _existing(store, key)
    if store.exists(key):
        return _existing(store, key)
    client, bucket = store.client, store.bucket
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/octet-stream")
    try:
        parts = []
        with open(path, "rb") as f:
            for number, chunk in enumerate(iter(lambda: f.read(PART), b""), start=1):
                etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                          Body=chunk)["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                          MultipartUpload={"Parts": parts})
    except Exception:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        raise
    return {"sha256": sha.hexdigest(), "size": size}


def _existing(store: Store, key: str) -> dict[str, Any]:
    body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"]
    sha, size = hashlib.sha256(), 0
    for chunk in body.iter_chunks(8 << 20):
        sha.update(chunk)
        size += len(chunk)
    return {"sha256": sha.hexdigest(), "size": size}


def version_profile(store: Store, prefix: str) -> dict[str, Any]:
    """A version's profile with the sketches drift needs; versions cut before sketches existed are profiled
    again from their Parquet, a row group at a time."""
    profile = store.get_json(prefix + "profile.json")
    if all(("sketch" in c and same_grid(c["sketch"], SKETCH)) or "counts" in c or not c.get("count")
           for c in profile.get("columns", [])):
        return profile
    manifest = store.get_json(prefix + "manifest.json")
    with tempfile.NamedTemporaryFile(prefix="mloop-previous-", suffix=".parquet") as spool:
        body = store.client.get_object(Bucket=store.bucket, Key=prefix + "data.parquet")["Body"]
        sha = hashlib.sha256()
        for chunk in body.iter_chunks(8 << 20):
            sha.update(chunk)
            spool.write(chunk)
        spool.flush()
        if sha.hexdigest() != manifest["files"]["data.parquet"]["sha256"].removeprefix("sha256:"):
            raise ValueError(f"{prefix}data.parquet does not match its manifest")
        file = pq.ParquetFile(spool.name)
        profiler = Profiler(file.schema_arrow)
        for batch in file.iter_batches():
            profiler.update(batch)
        return profiler.result()


def main(argv: list[str] | None = None) -> int:
    return main_for("ingest", ingest, argv)


if __name__ == "__main__":
    sys.exit(main())
