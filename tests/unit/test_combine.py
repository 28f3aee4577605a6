"""A derived Dataset's rows, streamed from its parents' Parquet a batch at a time: union and join make the rows
the whole tables would, the transform picks the same rows whatever the batch size, a derived version of a whole
parent has the parent's digest, and errors name the parent and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mloop.api.dataset import DerivedSource, JoinSpec, Transform, UnionSpec
from mloop.data import parents, pipeline
from mloop.data.errors import DataError

A = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
B = pd.DataFrame({"y": ["c"], "x": [3]})
REFS = [{"name": "a"}, {"name": "b"}]
BATCHES = [1, 7, 1_000_000]


def version(tmp_path: Path, name: str, frame: pd.DataFrame, rows: int = 1000) -> parents.Parent:
    """A parent version as ingestion writes it: canonical Parquet in row groups."""
    out = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.parquet"
    pipeline.run(pipeline.frame_batches(frame, rows), None, None, str(out))
    return parents.Parent(name, pq.ParquetFile(out))


def cut(tmp_path: Path, stream: parents.Batches) -> pipeline.Pass:
    return pipeline.run(stream(), None, None, str(tmp_path / f"cut-{len(list(tmp_path.iterdir()))}.parquet"))


def rows(stream: parents.Batches) -> pd.DataFrame:
    return pa.Table.from_batches(list(stream())).to_pandas()


def test_union_stacks_rows_in_parent_order_with_the_first_parents_columns(tmp_path: Path) -> None:
    schema, stream = parents.union(UnionSpec(datasets=REFS), [version(tmp_path, "a", A), version(tmp_path, "b", B)], 1)
    assert rows(stream).to_dict("list") == {"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}
    assert schema.field("x").type == pa.float64()


def test_union_columns_take_the_shared_columns_of_wider_parents(tmp_path: Path) -> None:
    wide = version(tmp_path, "b", B.assign(row_id=["r1"]))
    _, stream = parents.union(UnionSpec(datasets=REFS, columns=["y", "x"]), [version(tmp_path, "a", A), wide], 7)
    out = rows(stream)
    assert list(out.columns) == ["y", "x"] and len(out) == 3


@pytest.mark.parametrize("spec, b, words", [
    (UnionSpec(datasets=REFS), B.assign(z=[0]), "parent b has column 'z' that parent a lacks"),
    (UnionSpec(datasets=REFS), B.drop(columns="y"), "parent b has no column 'y' (parent a has it)"),
    (UnionSpec(datasets=REFS, columns=["x", "w"]), B, "parent a has no column 'w'"),
    (UnionSpec(datasets=REFS), B.assign(x=["three"]), "column 'x' holds different types: number in a, text in b"),
])
def test_union_mismatch_names_parent_and_column(tmp_path: Path, spec: UnionSpec, b: pd.DataFrame, words: str) -> None:
    with pytest.raises(DataError) as err:
        parents.union(spec, [version(tmp_path, "a", A), version(tmp_path, "b", b)], 1)
    assert err.value.reason == "ColumnMismatch" and words in err.value.message


def test_a_column_missing_in_every_row_of_one_parent_takes_the_others_type(tmp_path: Path) -> None:
    empty = version(tmp_path, "b", pd.DataFrame({"x": [None, None], "y": ["c", "d"]}))
    schema, stream = parents.union(UnionSpec(datasets=REFS), [version(tmp_path, "a", A), empty], 1)
    assert schema.field("x").type == pa.float64() and rows(stream)["x"].isna().tolist() == [False, False, True, True]


PEOPLE = pd.DataFrame({"id": [1, 2, 3, None], "age": [30, 41, 25, 50]})
CITIES = pd.DataFrame({"id": [3, 1, None], "city": ["Oslo", "Lima", "Pune"]})


@pytest.mark.parametrize("batch", BATCHES)
def test_inner_join_keeps_left_order_and_only_matches(tmp_path: Path, batch: int) -> None:
    _, stream = parents.join(JoinSpec(left=REFS[0], right=REFS[1], on=["id"]), version(tmp_path, "people", PEOPLE),
                             version(tmp_path, "cities", CITIES), batch)
    assert rows(stream).to_dict("list") == {"id": [1.0, 3.0], "age": [30, 25], "city": ["Lima", "Oslo"]}


@pytest.mark.parametrize("batch", BATCHES)
def test_left_join_keeps_every_left_row_and_a_missing_key_matches_nothing(tmp_path: Path, batch: int) -> None:
    _, stream = parents.join(JoinSpec(left=REFS[0], right=REFS[1], on=["id"], how="left"),
                             version(tmp_path, "people", PEOPLE), version(tmp_path, "cities", CITIES), batch)
    out = rows(stream)
    assert out["age"].tolist() == [30, 41, 25, 50]
    assert out["city"].fillna("-").tolist() == ["Lima", "-", "Oslo", "-"]


@pytest.mark.parametrize("on, right, reason, words", [
    (["person"], CITIES, "JoinKeyMissing", "key column 'person' is not in people"),
    (["id"], pd.DataFrame({"id": [1, 2, 1], "city": ["a", "b", "c"]}), "JoinKeyNotUnique",
     "key (id) is not unique in cities: 1 at rows 0, 2"),
    (["id"], CITIES.assign(age=[1, 2, 3]), "ColumnMismatch", "column 'age' is in both people and cities"),
    (["id"], CITIES.assign(id=["3", "1", "x"]), "ColumnMismatch", "key column 'id' holds number in people but text"),
])
def test_join_errors_name_the_key_and_the_parent(tmp_path: Path, on: list[str], right: pd.DataFrame, reason: str,
                                                 words: str) -> None:
    with pytest.raises(DataError) as err:
        parents.join(JoinSpec(left=REFS[0], right=REFS[1], on=on), version(tmp_path, "people", PEOPLE),
                     version(tmp_path, "cities", right), 1)
    assert err.value.reason == reason and words in err.value.message


def table(n: int = 160) -> pd.DataFrame:
    """Numbers, text and flags, with a run of nulls (rows 5-12) that a batch of 7 cuts through."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=n)
    v[5:13] = np.nan
    s = np.array(rng.choice(["red", "green", "blue"], size=n), dtype=object)
    s[5:13] = None
    return pd.DataFrame({"id": np.arange(n), "v": v, "s": s, "flag": rng.random(n) > 0.5})


def whole_table_transform(frame: pd.DataFrame, spec: Transform) -> pd.DataFrame:
    """The transform on the whole table in memory, as ingestion did it before it streamed (the reference)."""
    if spec.filter == "flag == True and v > -1":
        frame = frame[frame["flag"] & (frame["v"] > -1)]
    if spec.select:
        frame = frame[list(spec.select)]
    if spec.sample:
        s = spec.sample
        n = min(s.rows if s.rows is not None else int(round(len(frame) * (s.fraction or 1.0))), len(frame))
        frame = frame.iloc[np.sort(np.random.default_rng(s.seed).choice(len(frame), size=n, replace=False))]
    if spec.split:
        sp = spec.split
        order = np.random.default_rng(sp.seed).permutation(len(frame))
        take = int(round(len(frame) * sp.test_fraction))
        frame = frame.iloc[np.sort(order[:take] if sp.part == "test" else order[take:])]
    return frame.reset_index(drop=True)


TRANSFORMS = [
    {"filter": "flag == True and v > -1", "select": ["id", "s", "v"]},
    {"sample": {"fraction": 0.4, "seed": 9}},
    {"filter": "flag == True and v > -1", "sample": {"rows": 30, "seed": 2},
     "split": {"part": "test", "testFraction": 0.3, "seed": 1}},
    {"split": {"part": "train", "testFraction": 0.25, "seed": 5}},
]


@pytest.mark.parametrize("spec", TRANSFORMS)
@pytest.mark.parametrize("batch", BATCHES)
def test_the_transform_streamed_picks_the_rows_the_whole_table_did(tmp_path: Path, spec: dict, batch: int) -> None:
    frame, transform = table(), Transform.model_validate(spec)
    parent = version(tmp_path, "p", frame, rows=64)
    stream = parents.derived(DerivedSource.model_validate({"datasetRef": {"name": "p"}, "transform": spec}),
                             [parent], batch)
    expected = whole_table_transform(frame, transform)
    got = rows(stream)
    assert got["id"].tolist() == expected["id"].tolist() and list(got.columns) == list(expected.columns)
    assert cut(tmp_path, stream).digest == cut(tmp_path, lambda: pipeline.frame_batches(expected, 50)).digest


def test_train_and_test_split_partition_the_rows(tmp_path: Path) -> None:
    parent = version(tmp_path, "p", table(100))
    sides = [rows(parents.derived(DerivedSource.model_validate({"datasetRef": {"name": "p"}, "transform": {
        "split": {"part": part, "testFraction": 0.3, "seed": 1}}}), [parent], 7)) for part in ("train", "test")]
    assert [len(s) for s in sides] == [70, 30] and sorted([*sides[0]["id"], *sides[1]["id"]]) == list(range(100))


@pytest.mark.parametrize("batch", BATCHES)
def test_a_whole_parent_and_a_union_have_the_digest_of_the_same_rows_ingested_at_once(tmp_path: Path,
                                                                                       batch: int) -> None:
    frame = table()
    parent = version(tmp_path, "p", frame, rows=64)
    same = parents.derived(DerivedSource.model_validate({"datasetRef": {"name": "p"}}), [parent], batch)
    assert cut(tmp_path, same).digest == cut(tmp_path, lambda: pipeline.frame_batches(frame, 160)).digest
    halves = [version(tmp_path, "a", frame.iloc[:90], rows=33), version(tmp_path, "b", frame.iloc[90:], rows=64)]
    both = parents.derived(DerivedSource.model_validate({"union": {"datasets": REFS}}), halves, batch)
    assert cut(tmp_path, both).digest == cut(tmp_path, same).digest


def test_a_filter_that_keeps_nothing_still_gives_the_columns(tmp_path: Path) -> None:
    parent = version(tmp_path, "p", table(50))
    stream = parents.derived(DerivedSource.model_validate({"datasetRef": {"name": "p"}, "transform": {
        "filter": "v > 1000", "select": ["id", "s"]}}), [parent], 7)
    batches = list(stream())
    assert [b.num_rows for b in batches] == [0] and batches[0].schema.names == ["id", "s"]


def test_batches_follow_the_memory_block_not_the_table(tmp_path: Path) -> None:
    parent = version(tmp_path, "p", table(2000), rows=2000)
    per = parents.rows_per_batch([parent], 4096)
    assert 1 <= per < 2000
    assert max(b.num_rows for b in parents.derived(DerivedSource.model_validate({"datasetRef": {"name": "p"}}),
                                                   [parent], per)()) <= per
