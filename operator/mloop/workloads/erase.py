"""The erase task: remove an erasure request's subjects from every version of its Datasets, and from task records.

    python -m mloop.workloads.erase <task prefix in the bucket>

Every step can be repeated after a kill: a new version is content-addressed and written before the old one's
data goes; the tombstone is write-once and names the request (and the version that replaced it), so a second run
finds what the first did. It reads salted hashes only and logs counts and versions, never a key.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections import defaultdict
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mloop.api.erasure import EraseResult, EraseTarget, EraseTaskSpec, TombstonedVersion
from mloop.data.canonical import canonical_table, digest_table
from mloop.data.erasure import bury, collected_matching, matching, text_holds
from mloop.data.profile import profile_frame
from mloop.data.tables import read_version
from mloop.storage.artifacts import AlreadyExists, Store, sha256_hex
from mloop.storage.layout import collected_prefix, dataset_prefix, feedback_prefix, task_prefix, tombstone
from mloop.workloads.task import main_for, now_iso


def _under(prefix: str) -> str:
    """A layout folder with an empty last part (every version, every task): one slash at the end."""
    return prefix.rstrip("/") + "/"


def _folders(store: Store, prefix: str) -> dict[str, set[str]]:
    """Sub-folders of prefix and the file names in each."""
    prefix = _under(prefix)
    found: dict[str, set[str]] = defaultdict(set)
    for key in store.list_keys(prefix):
        folder, _, file = key[len(prefix):].partition("/")
        if file:
            found[folder].add(file)
    return found


def _put_once(store: Store, key: str, body: bytes) -> str:
    try:
        return store.put(key, body)
    except AlreadyExists:  # an earlier attempt wrote it: same key, same content
        return sha256_hex(store.get(key))


def cut_without(store: Store, task: EraseTaskSpec, dataset: str, old: dict[str, Any], frame: pd.DataFrame
                ) -> dict[str, Any]:
    """A new version of `dataset` from `frame` (the old rows minus the subjects'), written as ingestion would."""
    table = canonical_table(frame)
    digest = digest_table(table)
    prefix = dataset_prefix(task.namespace, dataset, digest.hexdigest)
    manifest = store.get_json_or_none(prefix + "manifest.json")
    if manifest is None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        profile = json.dumps(profile_frame(frame), indent=2).encode()
        files = {"data.parquet": {"sha256": _put_once(store, prefix + "data.parquet", data), "size": len(data)},
                 "profile.json": {"sha256": _put_once(store, prefix + "profile.json", profile), "size": len(profile)}}
        manifest = {"kind": "DatasetVersion", "namespace": task.namespace, "dataset": dataset, "digest": digest.full,
                    "version": digest.version, "rows": len(frame), "columns": old.get("columns", []), "files": files,
                    "source": old.get("source", ""), "createdAt": now_iso(),
                    "erasure": {"request": task.name, "uid": task.uid, "replaces": old["digest"]}}
        try:
            store.put_json(prefix + "manifest.json", manifest)
        except AlreadyExists:
            manifest = store.get_json(prefix + "manifest.json")
    return {"version": manifest["version"], "digest": manifest["digest"], "rows": manifest["rows"],
            "uri": store.uri(prefix), "createdAt": manifest["createdAt"]}


def erase_dataset(store: Store, task: EraseTaskSpec, target: EraseTarget, erased: dict[str, set[str]],
                  result: EraseResult, log: logging.Logger) -> None:
    hashes = set(task.hashes)
    ns, name = task.namespace, target.name
    parent_labels = {f"{p}@{d[:12]}" for p in target.parents for d in erased.get(p, ())}
    affected: set[str] = set()
    for digest, files in sorted(_folders(store, dataset_prefix(ns, name, "")).items()):
        prefix = dataset_prefix(ns, name, digest)
        stone = store.get_json_or_none(tombstone(prefix)) if "tombstone.json" in files else None
        if stone is not None:
            if stone.get("request", {}).get("uid") == task.uid:  # this request's own work, from an earlier attempt
                affected.add(digest)
                bury(store, prefix, files, stone)
                result.tombstoned.append(TombstonedVersion(dataset=name, version=stone["version"], digest=stone["digest"],
                                                           rows=stone["rows"], erased_rows=stone["erasedRows"]))
                result.rows_erased += stone["erasedRows"]
                if stone.get("replacedBy"):
                    result.recut[name] = stone["replacedBy"]
            continue
        if "manifest.json" not in files or "data.parquet" not in files:
            continue  # incomplete (never read) or buried by another request
        manifest = store.get_json(prefix + "manifest.json")
        frame = read_version(store, prefix)
        mask = matching(frame, task.column, task.salt, hashes)
        count = int(mask.sum())
        descends = bool(set(str(manifest.get("source", "")).split(",")) & parent_labels)
        if not count and not descends:
            continue
        affected.add(digest)
        stone = {"kind": "DatasetVersionTombstone", "namespace": ns, "dataset": name, "version": manifest["version"],
                 "digest": manifest["digest"], "rows": manifest["rows"], "erasedRows": count,
                 "reason": "rows of erased subjects" if count else "derived from an erased version",
                 "request": {"namespace": ns, "name": task.name, "uid": task.uid}, "erasedAt": now_iso()}
        if target.recut and digest == target.current:
            stone["replacedBy"] = cut_without(store, task, name, manifest, frame[~mask].reset_index(drop=True))
            result.recut[name] = stone["replacedBy"]
            log.info("%s: cut version %s without %d rows", name, stone["replacedBy"]["version"], count)
        bury(store, prefix, files, stone)
        result.tombstoned.append(TombstonedVersion(dataset=name, version=manifest["version"], digest=manifest["digest"],
                                                   rows=manifest["rows"], erased_rows=count))
        result.rows_erased += count
        log.info("%s: version %s tombstoned (%d of %d rows matched)", name, manifest["version"], count, manifest["rows"])
    erased[name] = affected


def _holds(store: Store, key: str, task: EraseTaskSpec, hashes: set[str]) -> bool:
    data = store.get(key)
    if key.endswith(".parquet"):
        frame = pq.read_table(io.BytesIO(data)).to_pandas()
        return bool(matching(frame, task.column, task.salt, hashes).any()
                    or collected_matching(frame, task.column, task.salt, hashes).any())
    return text_holds(data, task.salt, hashes, task.column)


def _rewrite_without(store: Store, key: str, table: pa.Table, drop: Any) -> None:
    """A collection batch (written by a model server, not write-once) rewritten in place without some rows, or
    deleted when none is left: a repeat after a kill finds nothing more to drop."""
    kept = table.filter(pa.array(~drop.to_numpy()))
    if kept.num_rows == 0:
        store._call(store.client.delete_object, Key=key)
        return
    sink = pa.BufferOutputStream()
    pq.write_table(kept, sink, compression="zstd")
    store.put(key, sink.getvalue().to_pybytes(), overwrite=True)


def erase_collected(store: Store, task: EraseTaskSpec, model: str, result: EraseResult, log: logging.Logger) -> None:
    """A served model's collected predictions whose request rows carry a subject, and the labels sent back for
    them: the feedback first (its row ids are known only while the predictions still hold the rows), then the
    predictions."""
    hashes = set(task.hashes)
    batches = [k for k in sorted(store.list_keys(collected_prefix(task.namespace, model))) if k.endswith(".parquet")]
    found: dict[str, tuple[pa.Table, Any]] = {}
    row_ids: set[str] = set()
    for key in batches:
        table = pq.read_table(io.BytesIO(store.get(key)))
        frame = table.select(["row_id", "inputs"]).to_pandas() if "inputs" in table.column_names else None
        if frame is None:
            continue
        drop = collected_matching(frame, task.column, task.salt, hashes)
        if drop.any():
            found[key] = (table, drop)
            row_ids |= set(frame.loc[drop, "row_id"].astype(str))
    rewritten = 0
    if row_ids:
        for key in sorted(store.list_keys(feedback_prefix(task.namespace, model))):
            if not key.endswith(".parquet"):
                continue
            table = pq.read_table(io.BytesIO(store.get(key)))
            if "row_id" not in table.column_names:
                continue
            drop = table.column("row_id").to_pandas().astype(str).isin(row_ids)
            if drop.any():
                _rewrite_without(store, key, table, drop)
                rewritten += 1
    for key, (table, drop) in found.items():
        _rewrite_without(store, key, table, drop)
        rewritten += 1
    if rewritten:
        result.collected[model] = result.collected.get(model, 0) + rewritten
        log.info("model %s: %d served rows of erased subjects removed from %d collected and feedback batches",
                 model, len(row_ids), rewritten)


def erase_task_records(store: Store, task: EraseTaskSpec, result: EraseResult, log: logging.Logger) -> None:
    """Finished task records (spec, result, log) that copied a subject's row: deleted, a tombstone left."""
    hashes = set(task.hashes)
    root = _under(task_prefix(task.namespace, ""))
    for folder, files in sorted(_folders(store, root).items()):
        if folder.startswith("erase-") or "tombstone.json" in files or "result.json" not in files:
            continue
        prefix = root + folder + "/"
        if any(_holds(store, prefix + f, task, hashes) for f in sorted(files)):
            bury(store, prefix, files,
                 {"kind": "TaskRecordTombstone", "task": folder, "files": sorted(files), "erasedAt": now_iso(),
                  "request": {"namespace": task.namespace, "name": task.name, "uid": task.uid}})
            result.tasks.append(folder)
            log.info("task record %s erased", folder)


def remaining(store: Store, task: EraseTaskSpec) -> list[str]:
    """A last look at every object the request covers: what still holds a subject (nothing, to complete)."""
    hashes = set(task.hashes)
    found = []
    prefixes = [_under(dataset_prefix(task.namespace, t.name, "")) for t in task.targets] + [
        _under(task_prefix(task.namespace, ""))] + [collected_prefix(task.namespace, m) for m in task.models]
    for prefix in prefixes:
        for key in store.list_keys(prefix):
            if key.startswith(task_prefix(task.namespace, "erase-")) or key.endswith(("tombstone.json", "manifest.json")):
                continue
            if _holds(store, key, task, hashes):
                found.append(key)
    return found


def erase(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    task = EraseTaskSpec.model_validate(raw)
    log.info("erasing %d subject hashes from %d Datasets by column %s", len(task.hashes), len(task.targets), task.column)
    result = EraseResult(status="Succeeded", reason="Erased")
    erased: dict[str, set[str]] = {}
    for model in task.models:
        erase_collected(store, task, model, result, log)
    for target in task.targets:
        erase_dataset(store, task, target, erased, result, log)
    erase_task_records(store, task, result, log)
    result.remaining = remaining(store, task)[:64]
    if result.remaining:
        result.status, result.reason = "Failed", "SubjectsRemain"
        result.message = f"{len(result.remaining)} objects still hold a subject, e.g. {result.remaining[0]}"
    else:
        result.message = (f"{result.rows_erased} rows erased; {len(result.tombstoned)} versions tombstoned, "
                          f"{len(result.recut)} Datasets recut, {len(result.tasks)} task records erased"
                          + (f", {sum(result.collected.values())} collected batches rewritten" if result.collected
                             else ""))
    log.info(result.message)
    return result.to_wire()


def main(argv: list[str] | None = None) -> int:
    return main_for("erase", erase, argv)


if __name__ == "__main__":
    sys.exit(main())
