"""Read a Dataset's source into a DataFrame."""

from __future__ import annotations

import io
import re
from typing import Any, Callable

import pandas as pd
import pyarrow.parquet as pq

from mloop.api.dataset import BuiltinSource, InlineSource, S3Source
from mloop.data.errors import DataError
from mloop.storage.artifacts import Store

FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}
# The target column of each bundled table, with the class names where there are any.
BUILTIN_TARGETS = {"iris": "species", "wine": "cultivar", "breast_cancer": "diagnosis", "diabetes": "target",
                   "digits": "digit"}


def _column_name(raw: str) -> str:
    name = re.sub(r"\s*\(.*?\)", "", str(raw)).strip().lower()
    return re.sub(r"[^a-z0-9_]+", "_", name).strip("_")


def load_builtin(source: BuiltinSource) -> pd.DataFrame:
    from sklearn import datasets

    loader: Callable[..., Any] = getattr(datasets, f"load_{source.name}")
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [_column_name(c) for c in frame.columns]
    target = BUILTIN_TARGETS[source.name]
    frame = frame.rename(columns={"target": target})
    names = getattr(bunch, "target_names", None)
    if names is not None and source.name != "digits" and frame[target].dtype.kind in "iu":
        frame[target] = pd.Categorical.from_codes(frame[target].to_numpy(), [str(n) for n in names]).astype(str)
    return frame


def load_inline(source: InlineSource) -> pd.DataFrame:
    return pd.DataFrame(source.rows, columns=source.columns).infer_objects()


def detect_format(key: str, declared: str) -> str:
    if declared != "auto":
        return declared
    for suffix, fmt in FORMATS.items():
        if key.lower().endswith(suffix):
            return fmt
    raise DataError("UnknownFormat", f"cannot tell the format of {key!r} from its extension; set spec.source.s3.format")


def parse_bytes(data: bytes, fmt: str, key: str, delimiter: str | None = None) -> pd.DataFrame:
    try:
        if fmt == "csv":
            sep = delimiter or ("\t" if key.lower().endswith(".tsv") else ",")
            frame = pd.read_csv(io.BytesIO(data), sep=sep)
            if frame.shape[1] == 1 and len(frame) > 0 and any(ch in str(frame.columns[0]) for ch in ";\t|"):
                raise DataError(
                    "WrongDelimiter",
                    f"{key}: found one column {str(frame.columns[0])[:80]!r}; the delimiter is probably not "
                    f"{sep!r}: set spec.source.s3.delimiter",
                )
            return frame
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        # precise_float: the default parser rounds the last digit, which would change the digest.
        return pd.read_json(io.BytesIO(data), lines=True, precise_float=True, dtype=False)
    except DataError:
        raise
    except pd.errors.EmptyDataError as err:
        raise DataError("EmptyTable", f"{key}: the file is empty") from err
    except Exception as err:  # pandas and pyarrow raise many types for unreadable input
        raise DataError("UnreadableFile", f"{key}: cannot read as {fmt}: {str(err)[:300]}") from err


def split_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key


def load_s3(source: S3Source, client: Any) -> tuple[pd.DataFrame, list[str]]:
    """One object, or every object under a prefix (ending in /) concatenated in key order."""
    bucket, key = split_uri(source.uri)
    if key == "" or key.endswith("/"):
        keys = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        keys.sort()
        if not keys:
            raise DataError("MissingObject", f"no objects under {source.uri}")
    else:
        keys = [key]
    frames = []
    for k in keys:
        try:
            body = client.get_object(Bucket=bucket, Key=k)["Body"].read()
        except client.exceptions.NoSuchKey as err:
            raise DataError("MissingObject", f"s3://{bucket}/{k} does not exist") from err
        except client.exceptions.NoSuchBucket as err:
            raise DataError("MissingObject", f"bucket {bucket!r} does not exist") from err
        frames.append(parse_bytes(body, detect_format(k, source.format), k, source.delimiter))
    if len(frames) > 1:
        columns = list(frames[0].columns)
        for k, frame in zip(keys[1:], frames[1:]):
            if list(frame.columns) != columns:
                raise DataError("SchemaMismatch", f"s3://{bucket}/{k} has columns {list(frame.columns)}, expected {columns}")
    return (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]), keys


def read_version(store: Store, prefix: str) -> pd.DataFrame:
    """A Dataset version's rows, after checking data.parquet against its manifest."""
    manifest = store.get_json(prefix + "manifest.json")
    data = store.get(prefix + "data.parquet", expected_sha256=manifest["files"]["data.parquet"]["sha256"])
    return pq.read_table(io.BytesIO(data)).to_pandas()
