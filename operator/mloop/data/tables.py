"""Read a Dataset's source: whole into a DataFrame (small in-memory sources) or as a stream of Arrow record
batches (files in S3), whose memory is bounded by the block size."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
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
    """A whole file as a DataFrame, read by the same streaming readers as ingestion."""
    return read_bytes(data, fmt, key, delimiter).to_pandas()


def split_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key


def read_version(store: Store, prefix: str) -> pd.DataFrame:
    """A Dataset version's rows, after checking data.parquet against its manifest."""
    manifest = store.get_json(prefix + "manifest.json")
    data = store.get(prefix + "data.parquet", expected_sha256=manifest["files"]["data.parquet"]["sha256"])
    return pq.read_table(io.BytesIO(data)).to_pandas()


# --- Streaming: a source as Arrow record batches, memory bounded by the block size, not the data size. ---

JSON_VIA_PANDAS = "\x00json-via-pandas"  # a `forced` key: Arrow's JSON reader could not keep a stable schema
# Arrow parses CSV fastest in blocks that stay in the CPU's cache: 1 MiB took 1.0 s of CPU per 1M rows
# (240 MB), 16 MiB 1.5-1.9 s. Batches are still cut at the task's block size by joining parsed blocks.
PARSE_BLOCK = 1 << 20
CSV_NEWLINES = "\x00csv-newlines"
CSV_LONG_ROWS = "\x00csv-long-rows"  # a `forced` key: a row is longer than PARSE_BLOCK, parse whole blocks  # a `forced` key: quoted values hold line breaks (slower, quote-aware chunking)


class TypeConflict(Exception):
    """A column's type changed part-way through the source: read it again from the start with `type`."""

    def __init__(self, column: str, type_: pa.DataType, why: str = ""):
        super().__init__(f"column {column!r} read again as {type_}: {why}")
        self.column, self.type, self.why = column, type_, why


def promote(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The narrowest type holding both: null gives way, integers widen to float, anything else is text."""
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    numeric = (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b))
    return pa.float64() if numeric else pa.string()


def _cast_column(arr: pa.Array, t: pa.DataType) -> pa.Array:
    if arr.type == t:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), t)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_string(t) and (pa.types.is_floating(arr.type)):
        # 1.0 -> "1.0" would differ from how the value was written; integral floats print as integers
        as_int = pc.cast(arr, pa.int64(), safe=False)
        integral = pc.equal(pc.cast(as_int, pa.float64()), arr)
        return pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(arr, pa.string()))
    return pc.cast(arr, t, safe=not pa.types.is_string(t))


def _force(batch: pa.RecordBatch, forced: dict[str, pa.DataType]) -> pa.RecordBatch:
    if not any(n in forced and forced[n] != batch.schema.field(n).type for n in batch.schema.names):
        return batch
    columns = [_cast_column(c, forced[n]) if n in forced else c for n, c in zip(batch.schema.names, batch.columns)]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _conform(batches: Iterator[pa.RecordBatch], key: str, forced: dict[str, pa.DataType],
             expect: list[pa.Schema]) -> Iterator[pa.RecordBatch]:
    """Batches of one object with the column names and types of the first object (`expect`); a type that
    changes raises TypeConflict with the type that holds both, so the read starts again."""
    for batch in batches:
        batch = _force(batch, forced)
        if not expect:
            expect.append(batch.schema)
        schema = expect[0]
        if batch.schema.names != schema.names:
            raise DataError("SchemaMismatch", f"{key} has columns {batch.schema.names}, expected {schema.names}")
        if batch.schema.types != schema.types:
            columns = []
            for name, arr, want in zip(schema.names, batch.columns, schema.types):
                if arr.type != want and not pa.types.is_null(arr.type):
                    raise TypeConflict(name, promote(want, arr.type), f"{key}: {want} then {arr.type}")
                columns.append(_cast_column(arr, want))
            batch = pa.RecordBatch.from_arrays(columns, names=schema.names)
        yield batch


def csv_batches(opener: Callable[[], Any], key: str, delimiter: str | None, block_size: int,
                forced: dict[str, pa.DataType], declared: Mapping[str, str]) -> Iterator[pa.RecordBatch]:
    """`declared`: the schema's column types; text columns are read as text ('007' stays '007'), dates are
    parsed only in columns declared datetime."""
    sep = delimiter or ("\t" if key.lower().endswith(".tsv") else ",")
    convert = {"strings_can_be_null": True, "quoted_strings_can_be_null": True}

    def open_reader(types: dict[str, pa.DataType], block: int = block_size) -> Any:
        try:
            return pacsv.open_csv(opener(), read_options=pacsv.ReadOptions(block_size=block),
                                  parse_options=pacsv.ParseOptions(delimiter=sep,
                                                                   newlines_in_values=CSV_NEWLINES in forced),
                                  convert_options=pacsv.ConvertOptions(column_types=types, **convert))
        except pa.ArrowInvalid as err:
            if "straddling" in str(err) and block < block_size:
                raise TypeConflict(CSV_LONG_ROWS, pa.null(), "a row longer than the parse block") from err
            if "Empty CSV file" in str(err):
                raise DataError("EmptyTable", f"{key}: the file is empty") from err
            raise DataError("UnreadableFile", f"{key}: cannot read as csv: {str(err)[:300]}") from err

    text = {n: pa.string() for n, t in declared.items() if t in ("string", "category")}
    types = {**text, **{n: t for n, t in forced.items() if not n.startswith("\x00")}}
    reader = open_reader(types)
    # Dates stay text unless declared: pandas never guessed them, and a version must not change meaning.
    dates = {f.name: pa.string() for f in reader.schema if f.name not in types and declared.get(f.name) != "datetime"
             and (pa.types.is_timestamp(f.type) or pa.types.is_date(f.type) or pa.types.is_time(f.type))}
    types |= dates
    parse = block_size if CSV_LONG_ROWS in forced else min(block_size, PARSE_BLOCK)
    if dates or parse < block_size:
        # The types stay those the first full block showed; only the parsing goes on in small blocks.
        inferred = {f.name: f.type for f in reader.schema}
        reader.close()
        reader = open_reader({**inferred, **types}, parse)
    names = reader.schema.names
    per_batch = max(1, block_size // parse)
    pending: list[pa.RecordBatch] = []
    first, done = True, False
    while not done:
        try:
            pending.append(reader.read_next_batch())
            if len(pending) < per_batch:
                continue
        except StopIteration:
            if not pending:
                return
            done = True  # the last, shorter batch goes through the same checks
        except pa.ArrowInvalid as err:
            found = re.search(r"CSV column #(\d+)", str(err))
            if found and int(found.group(1)) < len(names):
                name = names[int(found.group(1))]
                was = reader.schema.field(name).type
                wider = pa.float64() if (pa.types.is_integer(was) or pa.types.is_null(was)) else pa.string()
                raise TypeConflict(name, wider, str(err)[:200]) from err
            if "straddling" in str(err) and parse < block_size:
                raise TypeConflict(CSV_LONG_ROWS, pa.null(), "a row longer than the parse block") from err
            if "newlines_in_values" in str(err) and CSV_NEWLINES not in forced:
                raise TypeConflict(CSV_NEWLINES, pa.null(), "line breaks inside quoted values") from err
            raise DataError("UnreadableFile", f"{key}: cannot read as csv: {str(err)[:300]}") from err
        batch = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        pending = []
        if first and batch.num_rows and len(names) == 1 and any(ch in names[0] for ch in ";\t|"):
            raise DataError("WrongDelimiter", f"{key}: found one column {names[0][:80]!r}; the delimiter is probably "
                                              f"not {sep!r}: set spec.source.s3.delimiter")
        first = False
        yield batch


def jsonl_batches(opener: Callable[[], Any], key: str, block_size: int,
                  forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    if JSON_VIA_PANDAS not in forced:
        try:
            reader = pajson.open_json(opener(), read_options=pajson.ReadOptions(block_size=block_size))
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
        except pa.ArrowInvalid as err:
            if "Empty JSON file" in str(err) or "empty" in str(err).lower() and "file" in str(err).lower():
                raise DataError("EmptyTable", f"{key}: the file is empty") from err
            # Arrow fixes a column's type from the first block and cannot widen it later: pandas reads
            # the file again in chunks, and the chunks' types are reconciled by TypeConflict.
            raise TypeConflict(JSON_VIA_PANDAS, pa.null(), str(err)[:200]) from err
    rows = max(1000, block_size // 200)
    try:
        chunks = pd.read_json(opener(), lines=True, precise_float=True, dtype=False, chunksize=rows)
        for chunk in chunks:
            from mloop.data.canonical import frame_to_arrow

            table = frame_to_arrow(chunk.reset_index(drop=True))
            for batch in table.to_batches():
                yield batch
    except (DataError, TypeConflict):
        raise
    except Exception as err:
        raise DataError("UnreadableFile", f"{key}: cannot read as jsonl: {str(err)[:300]}") from err


def parquet_batches(opener: Callable[[], Any], key: str, block_size: int) -> Iterator[pa.RecordBatch]:
    """Parquet needs its footer first: the object is spooled to local disk, then read a row group at a time."""
    with tempfile.NamedTemporaryFile(prefix="mloop-source-", suffix=".parquet") as spool:
        body = opener()
        shutil.copyfileobj(body, spool, 8 << 20)
        spool.flush()
        try:
            file = pq.ParquetFile(spool.name)
            meta = file.metadata
            width = max(1, (sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                            // max(1, meta.num_rows)))
            for batch in file.iter_batches(batch_size=max(1, block_size // width)):
                yield batch
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError("UnreadableFile", f"{key}: cannot read as parquet: {str(err)[:300]}") from err


def object_keys(source: S3Source, client: Any) -> tuple[str, list[str]]:
    bucket, key = split_uri(source.uri)
    if key == "" or key.endswith("/"):
        keys = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        keys.sort()
        if not keys:
            raise DataError("MissingObject", f"no objects under {source.uri}")
        return bucket, keys
    return bucket, [key]


def s3_batches(source: S3Source, client: Any, block_size: int, forced: dict[str, pa.DataType],
               declared: Mapping[str, str] | None = None) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Every object's rows as record batches, in key order, with one schema across objects."""
    bucket, keys = object_keys(source, client)

    def opener(k: str) -> Callable[[], Any]:
        def open_body() -> Any:
            try:
                return client.get_object(Bucket=bucket, Key=k)["Body"]
            except client.exceptions.NoSuchKey as err:
                raise DataError("MissingObject", f"s3://{bucket}/{k} does not exist") from err
            except client.exceptions.NoSuchBucket as err:
                raise DataError("MissingObject", f"bucket {bucket!r} does not exist") from err
        return open_body

    def all_batches() -> Iterator[pa.RecordBatch]:
        expect: list[pa.Schema] = []
        for k in keys:
            yield from format_batches(detect_format(k, source.format), opener(k), f"s3://{bucket}/{k}",
                                      source.delimiter, block_size, forced, declared or {}, expect)

    return keys, all_batches()


def format_batches(fmt: str, opener: Callable[[], Any], key: str, delimiter: str | None, block_size: int,
                   forced: dict[str, pa.DataType], declared: Mapping[str, str],
                   expect: list[pa.Schema] | None = None) -> Iterator[pa.RecordBatch]:
    """One object's batches, each with the names and types of the first (`expect`, shared across objects)."""
    if fmt == "csv":
        batches = csv_batches(opener, key, delimiter, block_size, forced, declared)
    elif fmt == "parquet":
        batches = parquet_batches(opener, key, block_size)
    else:
        batches = jsonl_batches(opener, key, block_size, forced)
    return _conform(batches, key, forced, [] if expect is None else expect)


def read_bytes(data: bytes, fmt: str, key: str, delimiter: str | None = None, block_size: int = 1 << 20,
               declared: Mapping[str, str] | None = None) -> pa.Table:
    """A whole file through the streaming readers (type conflicts resolved by reading again)."""
    forced: dict[str, pa.DataType] = {}
    while True:
        try:
            expect: list[pa.Schema] = []
            batches = list(format_batches(fmt, lambda: io.BytesIO(data), key, delimiter, block_size, forced,
                                          declared or {}, expect))
            return pa.Table.from_batches(batches, schema=expect[0] if expect else None) if batches else pa.table({})
        except TypeConflict as conflict:
            forced[conflict.column] = conflict.type
