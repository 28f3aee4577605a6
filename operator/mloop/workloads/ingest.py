"""The ingest task: read a Dataset's source, check it, and cut an immutable, content-addressed version.

    python -m mloop.workloads.ingest <task prefix in the bucket>
"""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mloop.api.dataset import DatasetSpec
from mloop.api.tasks import IngestResult, IngestTaskSpec
from mloop.data import combine
from mloop.data.canonical import canonical_table, digest_table
from mloop.data.drift import drift
from mloop.data.errors import DataError
from mloop.data.profile import profile_frame, summary
from mloop.data.tables import load_builtin, load_inline, load_s3, read_version
from mloop.data.transform import apply_transform
from mloop.data.validate import apply_rules, apply_schema
from mloop.storage.artifacts import AlreadyExists, Store, sha256_hex
from mloop.storage.layout import collected_prefix, dataset_prefix, feedback_prefix, package_prefix
from mloop.workloads.task import main_for, now_iso


def load_source(spec: DatasetSpec, task: IngestTaskSpec, store: Store) -> tuple[pd.DataFrame, str | None]:
    source = spec.source
    if source.builtin:
        return load_builtin(source.builtin), f"builtin:{source.builtin.name}"
    if source.inline:
        return load_inline(source.inline), "inline"
    if source.s3:
        frame, keys = load_s3(source.s3, store.client)
        return frame, f"{source.s3.uri} ({len(keys)} object{'s' if len(keys) != 1 else ''})"
    if source.derived:
        pins = task.parents or ([task.parent] if task.parent else [])
        if len(pins) != len(source.derived.parents()):
            raise DataError("WaitingForParent", "the task was started without every parent version")
        parents = [(p.name, read_version(store, dataset_prefix(p.namespace, p.name, p.digest))) for p in pins]
        if source.derived.union is not None:
            frame = combine.union(source.derived.union, parents)
        elif source.derived.join is not None:
            frame = combine.join(source.derived.join, parents[0], parents[1])
        else:
            frame = parents[0][1]
        return apply_transform(frame, source.derived.transform), ",".join(f"{p.name}@{p.digest[:12]}" for p in pins)
    if source.collection:
        return load_collection(source.collection, task.namespace, store)
    raise DataError("UnsupportedSource", "this source kind is not ingested by the ingest task")


def _read_batches(store: Store, prefix: str) -> pd.DataFrame:
    frames = [pq.read_table(io.BytesIO(store.get(k))).to_pandas() for k in sorted(store.list_keys(prefix))
              if k.endswith(".parquet")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_collection(source: Any, namespace: str, store: Store) -> tuple[pd.DataFrame, str]:
    """Served predictions joined with the labels that came back, one row per labelled prediction."""
    predictions = _read_batches(store, collected_prefix(namespace, source.model))
    feedback = _read_batches(store, feedback_prefix(namespace, source.model))
    if predictions.empty or feedback.empty:
        return pd.DataFrame(), f"collected:{source.model}:"
    if source.stage:
        predictions = predictions[predictions["stage"] == source.stage]
    labels = feedback.drop_duplicates("row_id", keep="last")[["row_id", "label"]]
    joined = predictions.drop_duplicates("row_id").merge(labels, on="row_id", how="inner")
    if joined.empty:
        return pd.DataFrame(), f"collected:{source.model}:"
    latest = joined.sort_values("version").iloc[-1]
    signature = store.get_json(package_prefix(namespace, source.model, int(latest["version"])) + "signature.json")
    target = signature["output"]["name"]
    inputs = pd.DataFrame([json.loads(x) for x in joined["inputs"]])
    frame = pd.concat([joined[["row_id"]].reset_index(drop=True),
                       pd.to_datetime(joined["served_at"], utc=True).rename("served_at").reset_index(drop=True),
                       inputs[[i["name"] for i in signature["inputs"]]].reset_index(drop=True),
                       joined["label"].map(json.loads).rename(target).reset_index(drop=True)], axis=1)
    frame = frame.sort_values(["served_at", "row_id"]).reset_index(drop=True)
    packages = sorted(set(joined["package"]))
    return frame, f"collected:{source.model}:{','.join(packages)}"


def ingest(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    return cut_version(IngestTaskSpec.model_validate(raw), store, log).to_wire()


def cut_version(task: IngestTaskSpec, store: Store, log: logging.Logger) -> IngestResult:
    spec = DatasetSpec.model_validate(task.spec)
    namespace, name = task.namespace, task.name
    try:
        frame, source_version = load_source(spec, task, store)
    except DataError as err:
        log.error("%s: %s", err.reason, err.message)
        return IngestResult(status="Failed", reason=err.reason, message=err.message)
    log.info("read %d rows x %d columns from %s", len(frame), frame.shape[1], source_version)
    if spec.source.collection is not None:
        new_rows = len(frame) - task.previous_rows
        if new_rows < spec.source.collection.min_new_rows:
            return IngestResult(status="Skipped", reason="NotEnoughRows", source_version=source_version,
                                message=f"{max(new_rows, 0)} new labelled rows, {spec.source.collection.min_new_rows} needed")

    checked = apply_rules(apply_schema(frame, spec.schema_), spec.validation)
    base: dict[str, Any] = {
        "rows": len(frame),
        "columns": [c.to_wire() for c in checked.columns],
        "validation": [{"rule": c.rule, **({"column": str(c.column)} if c.column is not None else {}),
                        "passed": c.passed, "message": c.message[:512]} for c in checked.checks],
        "source_version": source_version,
        "parents": task.parents or ([task.parent] if task.parent else None),
    }
    failed = checked.first_failure()
    if failed is not None:
        reason = "EmptyTable" if failed.rule == "minRows" and len(frame) == 0 else "ValidationFailed"
        log.error("validation failed: %s", failed.message)
        return IngestResult(status="Failed", reason=reason, message=failed.message, **base)

    try:
        table = canonical_table(checked.frame)
    except DataError as err:
        return IngestResult(status="Failed", reason=err.reason, message=err.message, **base)
    digest = digest_table(table)
    prefix = dataset_prefix(namespace, name, digest.hexdigest)
    profile = profile_frame(checked.frame)
    existing = store.get_json_or_none(prefix + "manifest.json")
    created = existing is None
    if created:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        files = {}
        for file, body in (("data.parquet", data), ("profile.json", json.dumps(profile, indent=2).encode())):
            try:
                files[file] = {"sha256": store.put(prefix + file, body), "size": len(body)}
            except AlreadyExists:  # a crashed earlier attempt wrote it; same digest, same content
                files[file] = {"sha256": sha256_hex(store.get(prefix + file)), "size": len(body)}
        manifest = {
            "kind": "DatasetVersion", "namespace": namespace, "dataset": name, "digest": digest.full,
            "version": digest.version, "rows": len(frame), "columns": base["columns"], "files": files,
            "source": source_version, "createdAt": now_iso(),
        }
        try:
            store.put_json(prefix + "manifest.json", manifest)
        except AlreadyExists:
            manifest = store.get_json(prefix + "manifest.json")
            created = False
        log.info("cut version %s (%d rows)", digest.version, len(frame))
    else:
        manifest = existing
        log.info("content unchanged: version %s already exists", digest.version)

    result = IngestResult(status="Succeeded", reason="VersionCut" if created else "Unchanged",
                          message=f"version {digest.version}: {len(frame)} rows" + ("" if created else " (unchanged)"),
                          version=digest.version, digest=digest.full, uri=store.uri(prefix), created=created,
                          created_at=manifest["createdAt"], profile=summary(profile), **base)
    previous = task.previous
    if previous and previous != digest.hexdigest:
        try:
            before = read_version(store, dataset_prefix(namespace, name, previous))
            result.drift = drift(before, checked.frame)
        except Exception as err:  # drift is informative; a missing previous version must not fail ingestion
            log.warning("no drift against %s: %s", previous[:12], err)
    return result


def main(argv: list[str] | None = None) -> int:
    return main_for("ingest", ingest, argv)


if __name__ == "__main__":
    sys.exit(main())
