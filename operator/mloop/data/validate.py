"""Schema checks and validation rules, fed batch by batch. Each failure names the column and its first
offending rows, numbered over the whole table (not the batch)."""

from __future__ import annotations

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mloop.api.dataset import ColumnSpec, ColumnStatus, SchemaSpec, ValidationRules
from mloop.data.profile import Distinct

SHOWN_ROWS = 5
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{7,}[0-9]$")


@dataclass
class Check:
    rule: str
    column: str | None
    passed: bool
    message: str = ""


@dataclass
class Validation:
    frame: pd.DataFrame
    columns: list[ColumnStatus]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


def _rows(mask: pd.Series | np.ndarray) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i) for i in idx[:SHOWN_ROWS])
    more = f" and {len(idx) - SHOWN_ROWS} more" if len(idx) > SHOWN_ROWS else ""
    return f"rows {shown}{more}"


def _as_text(series: pd.Series) -> pd.Series:
    """Values as text without a Python call per row: strings stay, integral floats print without '.0'."""
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and (dtype != object or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")):
        return series
    if dtype.kind == "f":
        values = series.to_numpy()
        finite = values[~np.isnan(values)]
        if finite.size == 0 or np.array_equal(finite, np.floor(finite)):
            return series.astype("Int64").astype("string")
    if dtype.kind == "b":
        return series.map({True: "true", False: "false"}).astype("string")
    return series.astype("string")


def _cast(series: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray | None]:
    """The column in its declared type, and a mask of values that could not be cast (None: none)."""
    kind = series.dtype.kind
    if spec.type in ("integer", "float"):
        if kind in "iu" or (kind == "f" and spec.type == "float"):
            return series, None
        if kind in "fb":
            numbers = series.astype("float64")
        else:
            numbers = pd.to_numeric(series, errors="coerce").astype("float64")
        values = numbers.to_numpy()
        missing = np.isnan(values)
        bad = series.notna().to_numpy() & missing
        if spec.type == "integer":
            bad |= ~missing & (np.floor(np.where(missing, 0, values)) != np.where(missing, 0, values))
            if not bad.any():
                return numbers.astype("Int64"), None
        return numbers, (bad if bad.any() else None)
    if spec.type == "boolean":
        if kind == "b":
            return series, None
        mapped = _as_text(series).str.strip().str.lower().map(
            {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
        bad = series.notna().to_numpy() & mapped.isna().to_numpy()
        return mapped.astype("boolean"), (bad if bad.any() else None)
    if spec.type == "datetime":
        if kind == "M":
            return series, None
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        bad = series.notna().to_numpy() & parsed.isna().to_numpy()
        return parsed, (bad if bad.any() else None)
    return _as_text(series), None


def _plain(values: pd.Series) -> bool:
    return values.dtype.kind in "iuf" and isinstance(values.dtype, np.dtype)


def _extremes(array: np.ndarray) -> tuple[Any, Any]:
    """Min and max of a non-empty plain numeric array, NaN when it holds one (min and max carry it)."""
    return array.min(), array.max()


def _outside_range(values: pd.Series, low: float | None, high: float | None,
                   extremes: tuple[Any, Any] | None = None) -> np.ndarray | None:
    """Rows outside [low, high]; two reductions decide the common all-inside case without a mask."""
    plain = _plain(values)
    array = values.to_numpy() if plain else values.to_numpy(dtype="float64", na_value=np.nan)
    if array.size == 0:
        return None
    lo, hi = extremes if extremes is not None and plain else _extremes(array)
    if array.dtype.kind == "f" and (np.isnan(lo) or np.isnan(hi)):  # min and max carry NaN: only then mask it
        present = array[~np.isnan(array)]
        if present.size == 0:
            return None
        lo, hi = present.min(), present.max()
    if (low is None or lo >= low) and (high is None or hi <= high):
        return None
    with np.errstate(invalid="ignore"):
        mask = np.zeros(array.shape, bool)
        if low is not None:
            mask |= array < low
        if high is not None:
            mask |= array > high
    return mask


def _nulls(values: pd.Series, extremes: tuple[Any, Any] | None) -> np.ndarray | None:
    """The null rows, or None when the type or the extremes already tell there are none (no pass)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iub":
        return None
    if extremes is not None and not (np.isnan(extremes[0]) or np.isnan(extremes[1])):
        return None
    return values.isna().to_numpy()


WORD = 8  # bytes of a text value held in one 64-bit word by _AllowedText
BLOCK_ROWS = 1 << 16  # rows per step of _AllowedText's numpy passes: their temporaries stay in cache
KEEP = np.array([(1 << (8 * n)) - 1 for n in range(WORD + 1)], np.uint64)  # the low n bytes of a word


class _AllowedText:
    """Membership in allowedValues without hashing each row's text. When every allowed value fits in 8 bytes
    (category labels mostly do), each row's bytes are read as one 64-bit word straight from the Arrow
    buffers, a multiplier chosen here sends each allowed word to its own slot of a small table, and a row is
    allowed only if its word and byte length equal its slot's: exact, about a third of Arrow's hash set
    lookup (`is_in`), which stays the path for longer values and non-Arrow columns."""

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.value_set = pa.array(values, pa.large_string())
        self.table = _word_table(values)

    def outside(self, text: pd.Series) -> np.ndarray:
        """Rows holding a value (not a null) that is not allowed."""
        if not isinstance(text.array, (pd.arrays.ArrowStringArray, pd.arrays.ArrowExtensionArray)):
            return (text.notna() & ~text.isin(self.values)).to_numpy()
        arrow = pa.array(text)
        chunks = arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]
        masks = []
        for chunk in chunks:
            if self.table is not None and (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
                mask = _outside_words(chunk, *self.table)
            else:
                found = pc.is_in(chunk, value_set=self.value_set.cast(chunk.type))
                mask = ~found.to_numpy(zero_copy_only=False)
            if chunk.null_count:
                mask &= chunk.is_valid().to_numpy(zero_copy_only=False)
            masks.append(mask)
        return masks[0] if len(masks) == 1 else np.concatenate(masks) if masks else np.zeros(0, bool)


def _word_table(values: list[str]) -> tuple[np.uint64, np.uint64, np.ndarray, np.ndarray] | None:
    """(multiplier, shift, slot words, slot lengths) placing each allowed value in a slot of its own, or None
    when a value is longer than WORD bytes or no multiplier separates them. Empty slots hold word 1 with
    length -1, which no row has."""
    encoded = [v.encode() for v in dict.fromkeys(values)]
    if not encoded or any(len(b) > WORD for b in encoded):
        return None
    words = np.array([int.from_bytes(b, "little") for b in encoded], np.uint64)
    lengths = np.array([len(b) for b in encoded], np.int64)
    bits = max(2, (len(words) - 1).bit_length() + 2)
    rng = np.random.default_rng(0)  # fixed: the same table in every process
    for _ in range(64):
        multiplier = np.uint64(int(rng.integers(0, 1 << 62)) * 2 + 1)
        with np.errstate(over="ignore"):
            slots = (words * multiplier) >> np.uint64(64 - bits)
        if np.unique(slots).size == words.size:
            slot_words = np.ones(1 << bits, np.uint64)
            slot_lengths = np.full(1 << bits, -1, np.int64)
            slot_words[slots], slot_lengths[slots] = words, lengths
            return multiplier, np.uint64(64 - bits), slot_words, slot_lengths
    return None


def _outside_words(chunk: pa.Array, multiplier: np.uint64, shift: np.uint64, slot_words: np.ndarray,
                   slot_lengths: np.ndarray) -> np.ndarray:
    """_AllowedText's word lookup over one Arrow string array; null slots come out as outside."""
    buffers = chunk.buffers()
    offsets = np.frombuffer(buffers[1], np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
    offsets = offsets[chunk.offset:chunk.offset + len(chunk) + 1].astype(np.int64, copy=False)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    # aligned words with one to spare: a row's 8 bytes are two aligned words shifted together
    padded = np.zeros((data.size // WORD + 2) * WORD, np.uint8)
    padded[:data.size] = data
    aligned = padded.view(np.uint64)
    outside = np.empty(len(chunk), bool)
    with np.errstate(over="ignore"):
        for start in range(0, len(chunk), BLOCK_ROWS):
            bounds = offsets[start:start + BLOCK_ROWS + 1]
            first = bounds[:-1]
            lengths = bounds[1:] - first
            index = first >> 3
            word = aligned.take(index)
            index += 1
            high = aligned.take(index)
            bit = (first & 7).view(np.uint64)
            bit <<= np.uint64(3)
            word >>= bit
            np.subtract(np.uint64(64), bit, out=bit)
            high <<= bit  # numpy shifts by 64 to 0, as it must be when the row starts on a word
            word |= high
            word &= KEEP.take(lengths, mode="clip")  # the row's own bytes, not the next rows'
            slot = word * multiplier
            slot >>= shift
            slot = slot.view(np.int64)
            allowed = slot_words.take(slot) == word
            allowed &= slot_lengths.take(slot) == lengths
            np.logical_not(allowed, out=outside[start:start + len(first)])
    return outside


class _Hits:
    """Offending rows of one check across batches: how many, the first few (global row numbers), samples."""

    def __init__(self) -> None:
        self.count = 0
        self.rows: list[int] = []
        self.samples: list[object] = []

    def add(self, mask: np.ndarray | pd.Series, offset: int, values: pd.Series | None = None) -> None:
        mask = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        self.count += int(idx.size)
        if len(self.rows) < SHOWN_ROWS:
            self.rows += [int(i) + offset for i in idx[:SHOWN_ROWS - len(self.rows)]]
        if values is not None and len(self.samples) < 3:
            self.samples += values.iloc[idx[:3 - len(self.samples)]].tolist()

    def __bool__(self) -> bool:
        return self.count > 0

    def text(self) -> str:
        shown = ", ".join(str(i) for i in self.rows)
        more = f" and {self.count - SHOWN_ROWS} more" if self.count > SHOWN_ROWS else ""
        return f"rows {shown}{more}"


def _strictly_increasing(series: pd.Series) -> bool:
    """Each value above the one before (so no repeats): one vectorised comparison for plain numbers instead
    of pandas' is_unique hash table (21 ms per 1M rows)."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "iuf":
        values = series.to_numpy()
        return bool((values[1:] > values[:-1]).all())
    return bool(series.is_monotonic_increasing and series.is_unique)


class Unique:
    """Are a column's values unique? Each batch's 64-bit value hashes are spilled to a local file (8 bytes a
    row on disk); an ascending column (ids) is proven as it streams and its file never read. Any other is
    answered at the end by hash partitions: (hash, row) pairs are scattered by their top hash bits into
    PARTITIONS files, and each file small enough is sorted in memory, a larger one split again by the next
    bits. Memory stays about 32 bytes x SORT_ROWS whatever the row count; the answer is exact (up to 64-bit
    hash collisions, as before)."""

    def __init__(self) -> None:
        self.ascending = True
        self.last: object = None
        self.spill = tempfile.TemporaryFile(prefix="mloop-unique-")
        # an ascending prefix of plain numbers is spilled as its values, hashed only if the column stops
        # ascending (an id column never does, and its hashes would never be read); the latest batch is only
        # referenced until the next one comes, so a table checked in one batch writes nothing
        self.held: list[tuple[np.dtype, int]] = []
        self.raw: Any = None
        self.latest: pd.Series | None = None

    def add(self, series: pd.Series) -> None:
        if len(series) == 0:
            return
        if self.ascending:
            if series.isna().any() or not _strictly_increasing(series) or (
                    self.last is not None and not series.iloc[0] > self.last):
                self.ascending = False
            else:
                self.last = series.iloc[-1]
                if _plain(series) and self.spill.tell() == 0:
                    self._hold()
                    self.latest = series
                    return
        self._hash_held()
        pd.util.hash_pandas_object(series, index=False).to_numpy().tofile(self.spill)

    def _hold(self) -> None:
        """Spill the latest batch's values behind the held ones."""
        if self.latest is None:
            return
        if self.raw is None:
            self.raw = tempfile.TemporaryFile(prefix="mloop-unique-")
        self.latest.to_numpy().tofile(self.raw)
        self.held.append((self.latest.dtype, len(self.latest)))
        self.latest = None

    def _hash_held(self) -> None:
        """Hash the held prefix, a batch at a time, into the spill ahead of the rows that follow it."""
        self._hold()
        if not self.held:
            return
        self.raw.seek(0)
        for dtype, count in self.held:
            values = pd.Series(np.fromfile(self.raw, dtype=dtype, count=count), copy=False)
            pd.util.hash_pandas_object(values, index=False).to_numpy().tofile(self.spill)
        self.held = []
        self.raw.close()
        self.raw = None

    def duplicates(self) -> _Hits:
        hits = _Hits()
        try:
            if self.ascending:
                return hits
            self.spill.seek(0)
            with tempfile.TemporaryDirectory(prefix="mloop-unique-") as scratch:
                first = _scatter(_hash_chunks(self.spill), scratch, 0)
                shown: list[np.ndarray] = []
                for path in first:
                    _repeats(path, scratch, PARTITION_BITS, hits, shown)
        finally:
            self.spill.close()
            self.latest = None
            if self.raw is not None:
                self.raw.close()
        hits.rows = sorted(int(r) for part in shown for r in part)[:SHOWN_ROWS] if hits.count else []
        return hits


PAIR = np.dtype([("hash", "<u8"), ("row", "<i8")])
PARTITION_BITS = 6
PARTITIONS = 1 << PARTITION_BITS
SORT_ROWS = 1 << 21  # pairs sorted in memory at once: 2M x (16 + 8 order + 8 ranked) = 64 MiB
SCATTER_ROWS = 1 << 20  # pairs scattered at a time


def _hash_chunks(spill: Any) -> Iterator[np.ndarray]:
    """The spilled hashes with their row numbers, SCATTER_ROWS at a time."""
    row = 0
    while True:
        hashes = np.fromfile(spill, dtype=np.uint64, count=SCATTER_ROWS)
        if hashes.size == 0:
            return
        pairs = np.empty(hashes.size, PAIR)
        pairs["hash"], pairs["row"] = hashes, np.arange(row, row + hashes.size)
        row += hashes.size
        yield pairs


def _scatter(chunks: Iterable[np.ndarray], scratch: str, shift: int) -> list[str]:
    """Append each pair to the file of its hash bits [shift, shift + PARTITION_BITS) from the top; rows keep
    their order within a file, so the first of equal hashes is the earliest row."""
    name = tempfile.mkdtemp(dir=scratch)
    paths = [os.path.join(name, str(p)) for p in range(PARTITIONS)]
    files = [open(p, "wb") for p in paths]
    try:
        for pairs in chunks:
            part = ((pairs["hash"] << np.uint64(shift)) >> np.uint64(64 - PARTITION_BITS)).astype(np.intp)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(PARTITIONS + 1))
            ordered = pairs[order]
            for p in range(PARTITIONS):
                if bounds[p + 1] > bounds[p]:
                    ordered[bounds[p]:bounds[p + 1]].tofile(files[p])
    finally:
        for f in files:
            f.close()
    return paths


def _repeats(path: str, scratch: str, shift: int, hits: _Hits, shown: list[np.ndarray]) -> None:
    """Count the rows of one partition file whose hash an earlier row had; keep the first few rows."""
    size = os.path.getsize(path) // PAIR.itemsize
    if size == 0:
        os.unlink(path)
        return
    if size > SORT_ROWS and shift >= 64:  # every bit used: one hash (a value repeated in most rows)
        with open(path, "rb") as f:
            head = np.fromfile(f, dtype=PAIR, count=SHOWN_ROWS + 1)
        os.unlink(path)
        hits.count += size - 1
        shown.append(head["row"][1:])
        return
    if size > SORT_ROWS:
        def pieces() -> Iterator[np.ndarray]:
            with open(path, "rb") as f:
                while (pairs := np.fromfile(f, dtype=PAIR, count=SCATTER_ROWS)).size:
                    yield pairs
        parts = _scatter(pieces(), scratch, shift)
        os.unlink(path)
        for sub in parts:
            _repeats(sub, scratch, shift + PARTITION_BITS, hits, shown)
        return
    pairs = np.fromfile(path, dtype=PAIR)
    os.unlink(path)
    order = np.argsort(pairs["hash"], kind="stable")
    ranked = pairs["hash"][order]
    repeat = np.zeros(ranked.size, bool)
    repeat[1:] = ranked[1:] == ranked[:-1]
    rows = pairs["row"][order[repeat]]
    hits.count += int(rows.size)
    if rows.size:
        shown.append(np.sort(rows)[:SHOWN_ROWS])


class _Inference:
    """What one undeclared column looks like, gathered batch by batch (type, id role, PII)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: str | None = None
        self.rows = 0
        self.distinct = Distinct()
        self.unique = Unique() if name == "id" or name.endswith("_id") else None
        self.sample: list[str] = []

    def add(self, series: pd.Series) -> None:
        if self.kind is None or (self.kind != series.dtype.kind and len(series)):
            # a column typed by its first batch keeps that type; object wins over anything else
            self.kind = "O" if self.kind is not None else series.dtype.kind
        self.rows += len(series)
        if self.kind not in "biufM":
            present = series.dropna()
            if len(present):
                self.distinct.add(pa.array(present.astype(str).to_numpy(dtype=object), pa.string()))
            if len(self.sample) < 200:
                self.sample += present.astype(str).head(200 - len(self.sample)).tolist()
        if self.unique is not None:
            self.unique.add(series)

    def status(self) -> ColumnStatus:
        kind = self.kind or "O"
        type_ = {"b": "boolean", "i": "integer", "u": "integer", "f": "float", "M": "datetime"}.get(kind)
        if type_ is None:
            distinct = self.distinct.value
            type_ = "category" if distinct <= max(20, self.rows // 20) and distinct < self.rows else "string"
        role = "feature"
        if self.unique is not None and type_ in ("integer", "string") and \
                not self.unique.duplicates():
            role = "id"
        if type_ == "datetime":
            role = "timestamp"
        pii = "none"
        if type_ in ("string", "category") and self.sample:
            sample = pd.Series(self.sample, dtype=object)
            if sample.str.match(EMAIL).mean() > 0.5 or sample.str.match(PHONE).mean() > 0.5:
                pii = "direct"
        return ColumnStatus(name=self.name, type=type_, role=role, pii=pii)


def infer_column(name: str, series: pd.Series) -> ColumnStatus:
    inference = _Inference(name)
    inference.add(series)
    return inference.status()


def _check_column(series: pd.Series, spec: ColumnSpec, offset: int, hits: dict[str, _Hits],
                  allowed: _AllowedText | None = None) -> pd.Series | None:
    """One batch of one declared column: record offending rows, return the values cast to the declared type."""
    cast, bad = _cast(series, spec)
    if bad is not None:
        hits["type"].add(bad, offset, series)
    # one min and max of a float column answer both the range and (NaN or not) the nullable check
    extremes = _extremes(cast.to_numpy()) if _plain(cast) and len(cast) and (
        spec.min is not None or spec.max is not None or (not spec.nullable and cast.dtype.kind == "f")) else None
    if not spec.nullable:
        nulls = _nulls(cast, extremes)
        if nulls is not None:
            if bad is not None:
                nulls &= ~bad
            hits["nullable"].add(nulls, offset)
    if spec.allowed_values is not None:
        text = _as_text(cast)
        outside = (allowed or _AllowedText(spec.allowed_values)).outside(text)
        if bad is not None:
            outside &= ~bad
        hits["allowedValues"].add(outside, offset, text)
    if spec.min is not None or spec.max is not None:
        mask = _outside_range(pd.to_numeric(cast, errors="coerce") if cast.dtype.kind not in "iuf" else cast,
                              spec.min, spec.max, extremes)
        if mask is not None:
            hits["range"].add(mask, offset)
    return cast if cast is not series else None


class SchemaChecker:
    """Cast each batch to the declared schema (or infer one) and gather each schema check over all batches."""

    def __init__(self, schema: SchemaSpec | None) -> None:
        self.schema = schema
        self.declared = {c.name: c for c in schema.columns} if schema else {}
        self.names: list[str] | None = None
        self.hits: dict[str, dict[str, _Hits]] = {}
        self.allowed = {c.name: _AllowedText(c.allowed_values) for c in self.declared.values()
                        if c.allowed_values is not None}
        self.inferred: dict[str, _Inference] = {}
        self.rows = 0
        self.cast_names: set[str] = set()  # the columns the last feed() replaced by their cast values
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))

    @property
    def failing(self) -> bool:
        """Whether the checks so far already fail the table (the rest is read only to report it fully)."""
        if self.names is not None and self.schema is not None:
            if any(n not in self.names for n in self.declared):
                return True
            if not self.schema.allow_extra_columns and any(n not in self.declared for n in self.names):
                return True
        return any(h for hits in self.hits.values() for h in hits.values())

    def feed(self, frame: pd.DataFrame, offset: int) -> pd.DataFrame:
        if self.names is None:
            self.names = [str(c) for c in frame.columns]
            for name in self.names:
                if name in self.declared:
                    self.hits[name] = {r: _Hits() for r in ("type", "nullable", "allowedValues", "range")}
                else:
                    self.inferred[name] = _Inference(name)
        self.rows += len(frame)
        for name, inference in self.inferred.items():
            inference.add(frame[name])
        declared = [c for c in frame.columns if c in self.hits]
        self.cast_names = set()
        if not declared:
            return frame
        # Columns are checked in parallel: numpy and Arrow release the GIL in the heavy parts. Text lookups,
        # the costliest, go first so the workers finish together.
        declared.sort(key=lambda c: c not in self.allowed)
        results = list(self._pool.map(
            lambda c: _check_column(frame[c], self.declared[c], offset, self.hits[c], self.allowed.get(c)), declared))
        out = frame.copy(deep=False)  # copy-on-write: replacing a column never touches the caller's frame
        for name, cast in zip(declared, results):
            if cast is not None:
                out[name] = cast
                self.cast_names.add(name)
        return out

    def finish(self) -> tuple[list[ColumnStatus], list[Check]]:
        self._pool.shutdown()
        names = self.names or []
        if self.schema is None:
            return [self.inferred[n].status() for n in names], []
        checks: list[Check] = []
        missing = [n for n in self.declared if n not in names]
        if missing:
            checks.append(Check("columns", missing[0], False, f"declared columns missing from the data: {', '.join(missing)}"))
        extra = [n for n in names if n not in self.declared]
        if extra and not self.schema.allow_extra_columns:
            checks.append(Check("columns", extra[0], False,
                                f"columns not in spec.schema: {', '.join(extra)} (set allowExtraColumns to keep them)"))
        statuses: list[ColumnStatus] = []
        for name in names:
            spec = self.declared.get(name)
            if spec is None:
                statuses.append(self.inferred[name].status())
                continue
            hits = self.hits[name]
            if hits["type"]:
                checks.append(Check("type", name, False, f"column {name!r} is declared {spec.type} but "
                                                         f"{hits['type'].text()} hold {hits['type'].samples!r}"))
            else:
                checks.append(Check("type", name, True))
            if not spec.nullable:
                h = hits["nullable"]
                checks.append(Check("nullable", name, not h, f"column {name!r} is not nullable but {h.text()} are empty"
                                    if h else ""))
            if spec.allowed_values is not None:
                h = hits["allowedValues"]
                checks.append(Check("allowedValues", name, not h,
                                    f"column {name!r} has values outside {sorted(spec.allowed_values)[:10]} at "
                                    f"{h.text()}: {h.samples!r}" if h else ""))
            if (spec.min is not None or spec.max is not None) and not hits["type"]:
                h = hits["range"]
                checks.append(Check("range", name, not h,
                                    f"column {name!r} is outside [{spec.min}, {spec.max}] at {h.text()}" if h else ""))
            statuses.append(ColumnStatus(name=spec.name, type=spec.type, role=spec.role, pii=spec.pii))
        return statuses, checks


class RuleChecker:
    """Table rules (minRows, maxNullFraction, unique) over the cast batches."""

    def __init__(self, rules: ValidationRules | None) -> None:
        self.rules = rules
        self.rows = 0
        self.names: list[str] | None = None
        self.nulls: dict[str, _Hits] = {}
        self.unique: dict[str, Unique] = {}

    def feed(self, frame: pd.DataFrame, offset: int) -> None:
        if self.names is None:
            self.names = [str(c) for c in frame.columns]
            if self.rules is not None:
                if self.rules.max_null_fraction is not None:
                    self.nulls = {n: _Hits() for n in self.names}
                self.unique = {n: Unique() for n in self.rules.unique or [] if n in self.names}
        self.rows += len(frame)
        for name, hits in self.nulls.items():
            hits.add(frame[name].isna().to_numpy(), offset)
        for name, tracker in self.unique.items():
            tracker.add(frame[name])

    def finish(self) -> list[Check]:
        rules, rows = self.rules, self.rows
        if rows == 0:
            return [Check("minRows", None, False, "the table has no rows")]
        if rules is None:
            return []
        checks: list[Check] = []
        if rules.min_rows is not None:
            ok = rows >= rules.min_rows
            checks.append(Check("minRows", None, ok, "" if ok else f"{rows} rows, at least {rules.min_rows} required"))
        if rules.max_null_fraction is not None:
            for name, hits in self.nulls.items():
                fraction = hits.count / rows
                ok = bool(fraction <= rules.max_null_fraction)
                checks.append(Check("maxNullFraction", name, ok, "" if ok else
                                    f"column {name!r} is {fraction:.1%} null (limit {rules.max_null_fraction:.1%}): "
                                    f"{hits.text()}"))
        for name in rules.unique or []:
            if name not in self.unique:
                checks.append(Check("unique", name, False, f"unique column {name!r} is not in the data"))
                continue
            dup = self.unique[name].duplicates()
            checks.append(Check("unique", name, not dup, f"column {name!r} repeats values at {dup.text()}" if dup else ""))
        return checks


def apply_schema(frame: pd.DataFrame, schema: SchemaSpec | None) -> Validation:
    """Cast to the declared schema (or infer one) and record each schema check (the in-memory path)."""
    checker = SchemaChecker(schema)
    out = checker.feed(frame, 0)
    if checker.names is None:  # a frame with no columns
        checker.names = []
    statuses, checks = checker.finish()
    return Validation(out, statuses, checks)


def apply_rules(validation: Validation, rules: ValidationRules | None) -> Validation:
    frame = validation.frame
    checker = RuleChecker(rules)
    checker.feed(frame, 0)
    validation.checks += checker.finish()
    return validation
