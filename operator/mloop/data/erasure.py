"""Salted hashes of data subjects: what an erasure request keeps instead of the keys, and the standing filters that
keep an erased subject out of every later version.

A key and a cell match when their tokens hash alike: a cell's token is its text, an integral float written as an
integer (so 1001.0 read back from Parquet is the key 1001).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mloop.storage.artifacts import AlreadyExists, Store
from mloop.storage.layout import erasure_filters, tombstone

if TYPE_CHECKING:  # the operator hashes keys without loading pandas; only the workloads filter frames
    import pandas as pd

# Words of a text record (a task's log): what may be a key, between the usual separators.
_WORD = re.compile(r"[^\s\"'`,;:=\[\]{}()<>|]+")


def token(value: Any) -> str | None:
    """The text a key is compared as; None for a missing cell."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value).strip()
    return text or None


def subject_hash(salt: str, key: str) -> str:
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()


def parse_keys(text: str) -> list[str]:
    """One key per line; blank lines and surrounding spaces ignored, duplicates once."""
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def column_hashes(frame: pd.DataFrame, column: str, salt: str) -> list[str | None]:
    return [None if (t := token(v)) is None else subject_hash(salt, t) for v in frame[column].tolist()]


def matching(frame: pd.DataFrame, column: str, salt: str, hashes: set[str]) -> pd.Series:
    """A boolean mask of the rows whose subject is erased; all False when the column is not there."""
    import pandas as pd

    if column not in frame.columns or frame.empty:
        return pd.Series(False, index=frame.index)
    return pd.Series([h in hashes for h in column_hashes(frame, column, salt)], index=frame.index)


def collected_matching(frame: pd.DataFrame, column: str, salt: str, hashes: set[str]) -> pd.Series:
    """The rows of a batch of served predictions (serving/collector: the request's row as JSON in `inputs`) whose
    subject is erased; all False when the served rows do not carry the column."""
    import pandas as pd

    if "inputs" not in frame.columns or frame.empty:
        return pd.Series(False, index=frame.index)

    def erased(inputs: Any) -> bool:
        try:
            row = json.loads(inputs) if isinstance(inputs, (str, bytes)) else None
        except ValueError:
            return False
        value = token(row.get(column)) if isinstance(row, dict) else None
        return value is not None and subject_hash(salt, value) in hashes

    return pd.Series([erased(v) for v in frame["inputs"].tolist()], index=frame.index)


def _tokens(values: Iterable[Any]) -> Iterable[str]:
    for v in values:
        if isinstance(v, (list, dict)):
            continue
        if (t := token(v)) is not None:
            yield t


def _json_words(value: Any, column: str) -> Iterable[str]:
    """Every string (whole and its words), and the numbers that are values of the subject column: `{column: v}`, an
    inline table's column, a profile's or summary's entry for it (min, max). Other numbers are counts and
    statistics: a median of 5.0 is no row of subject 5, nor is a count of 5."""
    if isinstance(value, dict):
        if value.get("name") == column:
            yield from _tokens([value.get("min"), value.get("max")])
        columns, rows = value.get("columns"), value.get("rows")
        if isinstance(columns, list) and column in columns and isinstance(rows, list):
            at = columns.index(column)
            yield from _tokens(r[at] for r in rows if isinstance(r, list) and len(r) > at)
        for k, v in value.items():
            yield str(k)
            if k == column:
                yield from _tokens(v if isinstance(v, list) else [v])
            yield from _json_words(v, column)
    elif isinstance(value, list):
        for v in value:
            yield from _json_words(v, column)
    elif isinstance(value, str) and (t := token(value)) is not None:
        yield t
        yield from _WORD.findall(value)


def text_holds(data: bytes, salt: str, hashes: set[str], column: str) -> bool:
    """Whether a text record holds a subject key: in JSON as a string or a word of one, or as a value of the
    subject column; in other text (a log) as a word."""
    text = data.decode("utf-8", errors="replace")
    try:
        words: Iterable[str] = _json_words(json.loads(text), column)
    except ValueError:
        words = _WORD.findall(text)
    return any(subject_hash(salt, w) in hashes for w in words)


def load_filters(store: Store, namespace: str, dataset: str) -> list[dict[str, Any]]:
    """The standing filters of one Dataset: {request, column, salt, hashes} per erasure request."""
    return [store.get_json(k) for k in sorted(store.list_keys(erasure_filters(namespace, dataset)))
            if k.endswith(".json")]


def drop_erased(frame: pd.DataFrame, filters: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """The frame without the rows of erased subjects, and how many were dropped."""
    import pandas as pd

    keep = pd.Series(True, index=frame.index)
    for f in filters:
        keep &= ~matching(frame, f["column"], f["salt"], set(f["hashes"]))
    dropped = int((~keep).sum())
    return (frame[keep].reset_index(drop=True) if dropped else frame), dropped


def without_erased_rows(spec: dict[str, Any], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """A Dataset spec on the wire whose inline rows of erased subjects are left out: what an ingest task's spec.json
    may copy (the resource itself stays the user's)."""
    inline = (spec.get("source") or {}).get("inline")
    if not inline or not filters:
        return spec
    columns = inline["columns"]
    rows = [r for r in inline["rows"] if not any(
        f["column"] in columns and (t := token(r[columns.index(f["column"])])) is not None
        and subject_hash(f["salt"], t) in set(f["hashes"]) for f in filters)]
    if len(rows) == len(inline["rows"]):
        return spec
    return {**spec, "source": {**spec["source"], "inline": {**inline, "rows": rows}}}


def bury(store: Store, prefix: str, files: Iterable[str], stone: dict[str, Any]) -> None:
    """The one deletion path of a version or task folder (erasure and retention): the tombstone first
    (write-once), then every file but the manifest, so lineage still resolves and says why the data is gone."""
    try:
        store.put_json(tombstone(prefix), stone)
    except AlreadyExists:
        pass
    for file in sorted(set(files) - {"manifest.json", "tombstone.json"}):
        store._call(store.client.delete_object, Key=prefix + file)
