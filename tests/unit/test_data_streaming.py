"""Streaming ingest (issue 15): one digest whatever the format and the batching, checks that name global rows,
types that change part-way through a file, profiles and drift from mergeable sketches, the memory setting."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mloop.api.dataset import SchemaSpec, ValidationRules
from mloop.data import pipeline
from mloop.data.canonical import canonical_table, digest_table
from mloop.data.drift import drift, psi
from mloop.data.profile import profile_frame
from mloop.data.tables import TypeConflict, format_batches

ROWS = 2000


def table_with_null_runs() -> pd.DataFrame:
    """Every kind of column; rows 5-12 are null in all nullable ones, so a batch of 7 ends inside the run."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=ROWS)
    a[5:13] = np.nan
    s = np.array(rng.choice(["red", "green", "blue"], size=ROWS), dtype=object)
    s[5:13] = None
    s[1500:1600] = None
    i = pd.array(rng.integers(-50, 50, ROWS), dtype="Int64")
    i[5:13] = pd.NA
    flag = pd.array(rng.random(ROWS) > 0.5, dtype="boolean")
    flag[5:13] = pd.NA
    text = np.array([f"row {k} says \"hi\", ünïcode" if k % 3 else f"{k}\nover two lines" for k in range(ROWS)],
                    dtype=object)  # (no empty strings: CSV cannot tell them from nulls)
    text[5:13] = None
    return pd.DataFrame({"id": np.arange(ROWS), "a": a, "s": s, "i": i, "flag": flag, "text": text})


def as_jsonl(frame: pd.DataFrame) -> bytes:
    """JSON lines written with Python's exact float repr (pandas' to_json rounds to 10 digits)."""
    def plain(v):
        return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else (
            v.item() if hasattr(v, "item") else v)
    return "\n".join(json.dumps({k: plain(v) for k, v in row.items()}, ensure_ascii=False)
                     for row in frame.astype(object).to_dict("records")).encode()


def encode(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, row_group_size=97)
        return buf.getvalue()
    return as_jsonl(frame)


def run(batches_for, tmp_path: Path, schema=None, rules=None) -> pipeline.Pass:
    """pipeline.run as the ingest task calls it, reading again on a type conflict."""
    forced: dict = {}
    while True:
        try:
            return pipeline.run(batches_for(forced), schema, rules, str(tmp_path / "out.parquet"))
        except TypeConflict as conflict:
            forced[conflict.column] = conflict.type


def counted(batches, sizes: list[int]):
    for batch in batches:
        sizes.append(batch.num_rows)
        yield batch


def test_digest_is_the_same_in_any_format_and_any_batching(tmp_path: Path) -> None:
    frame = table_with_null_runs()
    in_memory = digest_table(canonical_table(frame)).version
    seen: dict[str, str] = {}
    inferred: set[tuple] = set()
    for rows in (1, 7, 1000, ROWS):
        cut = run(lambda forced: pipeline.frame_batches(frame, rows), tmp_path)
        assert cut.passed, cut.first_failure()
        seen[f"frame/{rows}"] = cut.digest.version
        inferred.add(tuple((c.name, c.type, c.role) for c in cut.columns))
    assert inferred == {(("id", "integer", "id"), ("a", "float", "feature"), ("s", "category", "feature"),
                         ("i", "integer", "feature"), ("flag", "boolean", "feature"), ("text", "string", "feature"))}
    for fmt in ("csv", "parquet", "jsonl"):
        data = encode(frame, fmt)
        for block in (1 << 12, 1 << 14, 1 << 24):
            sizes: list[int] = []
            cut = run(lambda forced: counted(format_batches(fmt, lambda: io.BytesIO(data), f"t.{fmt}", None, block,
                                                            forced, {}), sizes), tmp_path)
            assert cut.passed, cut.first_failure()
            seen[f"{fmt}/{block}/{len(sizes)} batches"] = cut.digest.version
            if block == 1 << 12:
                assert len(sizes) > 5, f"{fmt}: the small block gave {len(sizes)} batches"
    assert set(seen.values()) == {in_memory}, seen
    # the written Parquet holds the same rows, in the canonical types
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.num_rows == ROWS and written.schema.types == canonical_table(frame).schema.types
    assert written.column("text").null_count == 8 and written.column("text")[1].as_py() == "row 1 says \"hi\", ünïcode"


def test_any_change_changes_the_digest() -> None:
    frame = table_with_null_runs()
    variants = [frame, frame.iloc[:-1], frame[list(reversed(frame.columns))], frame.rename(columns={"a": "b"})]
    moved_null = frame.copy()
    moved_null.loc[13, "a"], moved_null.loc[12, "a"] = np.nan, frame.loc[13, "a"]
    empty_text = frame.copy()
    empty_text.loc[5, "text"] = ""  # a null and an empty string differ
    split_text = frame.copy()
    split_text.loc[1, "text"], split_text.loc[2, "text"] = "row 1 says", " \"hi\", ünïcoderow 2 says \"hi\", ünïcode"
    variants += [moved_null, empty_text, split_text]
    assert len({digest_table(canonical_table(v)).version for v in variants}) == len(variants)


def test_checks_name_the_column_and_the_row_in_the_whole_file(tmp_path: Path) -> None:
    rows = 20_000
    frame = pd.DataFrame({"id": np.arange(rows), "n": np.arange(rows) % 100, "v": np.linspace(0, 1, rows)})
    data = frame.to_csv(index=False).encode()
    bad = data[:data.rindex(b"\n", 0, len(data) - 1) + 1] + f"{rows - 1},oops,2.5\n".encode()  # last row bad
    schema = SchemaSpec.model_validate({"columns": [{"name": "id", "type": "integer"},
                                                    {"name": "n", "type": "integer"},
                                                    {"name": "v", "type": "float", "min": 0, "max": 1}]})
    sizes: list[int] = []
    cut = run(lambda forced: counted(format_batches("csv", lambda: io.BytesIO(bad), "t.csv", None, 1 << 14, forced,
                                                    pipeline.declared_types(schema)), sizes), tmp_path, schema)
    failure = cut.first_failure()
    assert failure is not None and (failure.rule, failure.column) == ("type", "n")
    assert failure.message == f"column 'n' is declared integer but rows {rows - 1} hold ['oops']"
    assert len(sizes) > 10 and cut.digest is None  # read in many batches; no version
    # a range failure far from the first batch, and a duplicate across batches
    frame2 = frame.copy()
    frame2.loc[15001, "v"] = 9.0
    frame2.loc[19990, "id"] = 3
    data2 = frame2.to_csv(index=False).encode()
    cut = run(lambda forced: format_batches("csv", lambda: io.BytesIO(data2), "t.csv", None, 1 << 14, forced, {}),
              tmp_path, schema, ValidationRules(unique=["id"]))
    messages = {(c.rule, c.column): c.message for c in cut.checks if not c.passed}
    assert messages[("range", "v")] == "column 'v' is outside [0.0, 1.0] at rows 15001"
    assert messages[("unique", "id")] == "column 'id' repeats values at rows 19990"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("late,kind", [(1.5, "float"), ("abc", "string")])
def test_a_type_that_changes_late_in_the_file_is_read_again_wider(tmp_path: Path, fmt: str, late, kind: str) -> None:
    rows = 30_000
    if fmt == "csv":
        data = ("x,y\n" + "".join(f"{k},{k % 7}\n" for k in range(rows - 1)) + f"{late},1\n").encode()
    else:
        data = "\n".join([json.dumps({"x": k, "y": k % 7}) for k in range(rows - 1)]
                         + [json.dumps({"x": late, "y": 1})]).encode()
    cut = run(lambda forced: format_batches(fmt, lambda: io.BytesIO(data), f"t.{fmt}", None, 1 << 14, forced, {}),
              tmp_path)
    assert cut.passed and cut.rows == rows
    assert {c.name: c.type for c in cut.columns}["x"] == kind
    column = pq.read_table(tmp_path / "out.parquet").column("x")
    assert column[rows - 1].as_py() == (1.5 if kind == "float" else "abc")
    assert column[12].as_py() == (12.0 if kind == "float" else "12")


def test_profile_and_drift_come_from_sketches_that_do_not_depend_on_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=150_000), "c": rng.choice(list("abcd"), size=150_000)})
    whole = run(lambda forced: pipeline.frame_batches(frame, 150_000), tmp_path).profile
    pieces = run(lambda forced: pipeline.frame_batches(frame, 7_777), tmp_path).profile
    for key in ("sketch", "quantiles", "distinct", "min", "max", "count"):
        assert whole["columns"][0][key] == pieces["columns"][0][key], key
    assert whole["columns"][0]["mean"] == pytest.approx(pieces["columns"][0]["mean"], abs=1e-12)
    assert whole["columns"][1]["counts"] == pieces["columns"][1]["counts"]
    # beyond the exact limit, quantiles come from the sketch within its relative error
    exact = np.quantile(frame["x"], [0.05, 0.25, 0.5, 0.75, 0.95])
    got = [whole["columns"][0]["quantiles"][q] for q in ("0.05", "0.25", "0.5", "0.75", "0.95")]
    assert np.allclose(got, exact, rtol=0.01, atol=0.01)
    assert abs(whole["columns"][0]["distinct"] - 150_000) < 0.05 * 150_000
    # drift from two profiles: none against itself, large for a shift
    shifted = frame.assign(x=frame["x"] + 1.0, c=np.where(frame["c"] == "a", "b", frame["c"]))
    moved = profile_frame(shifted)
    assert {d["column"]: d["value"] for d in drift(whole, whole)} == {"x": 0.0, "c": 0.0}
    found = {d["column"]: (d["method"], d["value"]) for d in drift(whole, moved)}
    assert found["x"][0] == "psi" and found["x"][1] > 0.25
    assert found["c"][0] == "tvd" and found["c"][1] == pytest.approx(0.25, abs=0.01)
    same = profile_frame(pd.DataFrame({"x": rng.normal(size=150_000)}))
    assert drift(whole, same)[0]["value"] < 0.05
    assert psi(frame["x"].to_numpy(), frame["x"].to_numpy()) == 0.0


def test_the_memory_limit_sets_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from mloop.api.tasks import Task
    from mloop.builders.job import build_job
    from mloop.config import Settings

    task = Task(name="ingest-x", namespace="ns", kind="ingest", prefix="tasks/ns/ingest-x/", command=["true"],
                owner={"apiVersion": "mloop.dev/v1alpha1", "kind": "Dataset", "name": "d", "uid": "u"},
                resources={"limits": {"memory": "1Gi"}})
    env = {e["name"]: e for e in build_job(task, Settings())["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOOP_MEMORY_LIMIT"]["valueFrom"] == {"resourceFieldRef": {"resource": "limits.memory"}}
    monkeypatch.setenv("MLOOP_MEMORY_LIMIT", str(1 << 30))
    assert pipeline.block_bytes() == 8 << 20
    monkeypatch.setenv("MLOOP_MEMORY_LIMIT", str(64 << 20))
    assert pipeline.block_bytes() == 1 << 20
    assert os.environ["MLOOP_MEMORY_LIMIT"] == str(64 << 20)


def test_dates_are_parsed_only_where_declared(tmp_path: Path) -> None:
    data = b"id,when,code\n1,2024-01-02,007\n2,2024-03-04T05:06:07,010\n"
    schema = SchemaSpec.model_validate({"columns": [{"name": "id", "type": "integer"},
                                                    {"name": "when", "type": "datetime"},
                                                    {"name": "code", "type": "string"}],
                                        "allowExtraColumns": True})
    declared = run(lambda forced: format_batches("csv", lambda: io.BytesIO(data), "t.csv", None, 1 << 20, forced,
                                                 pipeline.declared_types(schema)), tmp_path, schema)
    assert declared.passed, declared.first_failure()
    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("when").type) == "timestamp[us, tz=UTC]"
    assert table.column("code").to_pylist() == ["007", "010"]  # text stays text
    inferred = run(lambda forced: format_batches("csv", lambda: io.BytesIO(data), "t.csv", None, 1 << 20, forced, {}),
                   tmp_path)
    assert {c.name: c.type for c in inferred.columns}["when"] in ("string", "category")
    assert pq.read_table(tmp_path / "out.parquet").column("when").to_pylist()[0] == "2024-01-02"


def test_csv_is_parsed_in_small_blocks_with_the_types_of_the_first_full_block(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mloop.data import tables

    rows, block = 5000, 1 << 16
    lines = [f"{k},{'1.5' if k == 400 else k},abc" for k in range(rows)]  # x turns float after the first 4 KiB
    data = ("id,x,t\n" + "\n".join(lines) + "\n").encode()

    def ingest(payload: bytes) -> tuple[pipeline.Pass, dict, list[int]]:
        forced: dict = {}
        sizes: list[int] = []
        while True:
            try:
                batches = format_batches("csv", lambda: io.BytesIO(payload), "t.csv", None, block, forced, {})
                return pipeline.run(counted(batches, sizes), None, None, str(tmp_path / "out.parquet")), forced, sizes
            except TypeConflict as conflict:
                forced[conflict.column] = conflict.type
                sizes.clear()

    whole, _, whole_sizes = ingest(data)  # parsed in blocks of 64 KiB (the parse block is 1 MiB)
    monkeypatch.setattr(tables, "PARSE_BLOCK", 4096)
    small, forced, sizes = ingest(data)
    assert not forced  # x was typed float by the first 64 KiB, not by the first 4 KiB parsed
    assert {c.name: c.type for c in small.columns}["x"] == "float"
    assert small.digest == whole.digest and small.rows == rows
    assert len(sizes) == len(whole_sizes) < len(data) // 4096  # 4 KiB blocks joined into 64 KiB batches
    # a row longer than the parse block: read again parsing whole blocks
    long_row = data.replace(b"\n4000,4000,abc\n", b"\n4000,4000," + b"z" * 10_000 + b"\n")
    cut, forced, _ = ingest(long_row)
    assert list(forced) == [tables.CSV_LONG_ROWS] and cut.passed and cut.rows == rows
    assert pq.read_table(tmp_path / "out.parquet").column("t")[4000].as_py() == "z" * 10_000


def test_the_reader_thread_raises_its_error_in_the_pipeline_and_stops_with_it() -> None:
    batch = pa.RecordBatch.from_pydict({"x": [1, 2]})

    def failing():
        yield batch
        raise TypeConflict("x", pa.float64(), "late")

    with pytest.raises(TypeConflict):
        list(pipeline.prefetch(failing()))
    closed: list[bool] = []

    def endless():
        try:
            while True:
                yield batch
        finally:
            closed.append(True)

    ahead = pipeline.prefetch(endless())
    assert next(ahead).num_rows == 2
    ahead.close()
    assert closed == [True]


@pytest.mark.parametrize("budget", [None, 1000])
def test_unique_on_a_column_that_is_not_ascending_is_exact_in_bounded_memory(budget, monkeypatch) -> None:
    """Hash partitions spilled to disk: with 1000 pairs sorted at a time (so 300,000 rows are split twice and
    a constant column to the last bit), the answer is the same as pandas' over the whole column."""
    from mloop.data import validate

    if budget:
        monkeypatch.setattr(validate, "SORT_ROWS", budget)
        monkeypatch.setattr(validate, "SCATTER_ROWS", budget)
    rng = np.random.default_rng(0)
    columns = {"few": rng.integers(0, 10**6, 300_000), "shuffled": rng.permutation(300_000),
               "constant": np.full(300_000, 7),
               "text": np.array([f"k{v}" for v in rng.integers(0, 100_000, 300_000)], dtype=object)}
    frame = pd.DataFrame(columns)
    checker = validate.RuleChecker(ValidationRules(unique=list(columns)))
    for start in range(0, len(frame), 7777):
        checker.feed(frame.iloc[start:start + 7777], start)
    found = {c.column: c.message for c in checker.finish() if c.rule == "unique"}
    for name in columns:
        repeated = np.flatnonzero(frame[name].duplicated(keep="first").to_numpy())
        if repeated.size == 0:
            assert found[name] == ""
            continue
        shown = ", ".join(str(r) for r in repeated[:5])
        assert found[name] == f"column {name!r} repeats values at rows {shown} and {repeated.size - 5} more"


def test_unique_on_a_column_that_ascends_then_turns_back_names_its_repeats() -> None:
    """An ascending start is held as values and hashed only when the column turns back over them."""
    from mloop.data import validate

    frame = pd.DataFrame({"id": np.concatenate([np.arange(250_000), np.arange(50_000)[::-1] * 3])})
    checker = validate.RuleChecker(ValidationRules(unique=["id"]))
    for start in range(0, len(frame), 7777):
        checker.feed(frame.iloc[start:start + 7777], start)
    found = next(c for c in checker.finish() if c.rule == "unique")
    repeated = np.flatnonzero(frame["id"].duplicated(keep="first").to_numpy())
    shown = ", ".join(str(r) for r in repeated[:5])
    assert found.message == f"column 'id' repeats values at rows {shown} and {repeated.size - 5} more"


def test_a_small_csv_with_the_wrong_delimiter_names_it(tmp_path: Path) -> None:
    """The file is shorter than one batch: the last (only) batch still gets the first batch's checks."""
    from mloop.data.errors import DataError

    data = b"a;b;c\n1;2;3\n4;5;6\n"
    with pytest.raises(DataError) as err:
        run(lambda forced: format_batches("csv", lambda: io.BytesIO(data), "semicolons.csv", None, 1 << 22, forced,
                                          {}), tmp_path)  # 4 parse blocks a batch
    assert err.value.reason == "WrongDelimiter" and "delimiter" in err.value.message


def test_a_zoned_datetime_column_keeps_its_instants_and_nulls() -> None:
    """pandas 3.1 deprecates what pyarrow reads of such a column (Series.values, which drops the zone): the
    conversion must not rest on it. Canonical timestamps are UTC."""
    import warnings

    when = pd.Series(pd.to_datetime(["2026-03-29T00:30:00Z", None, "2026-03-29T01:30:00.123Z"], format="ISO8601"))
    frame = pd.DataFrame({"when": when.dt.tz_convert("Europe/Paris"), "n": [1, 2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = canonical_table(frame)
    column = table.column("when")
    assert str(column.type) == "timestamp[us, tz=UTC]"
    values = column.to_pylist()
    assert values[1] is None
    assert [v.isoformat() for v in (values[0], values[2])] == ["2026-03-29T00:30:00+00:00",
                                                               "2026-03-29T01:30:00.123000+00:00"]
