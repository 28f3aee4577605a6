"""Union and join of a derived Dataset's parents: the rows they make, and the errors that name parent and column."""

from __future__ import annotations

import pandas as pd
import pytest

from mloop.api.dataset import JoinSpec, UnionSpec
from mloop.data.combine import join, union
from mloop.data.errors import DataError

A = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
B = pd.DataFrame({"y": ["c"], "x": [3]})
REFS = [{"name": "a"}, {"name": "b"}]


def test_union_stacks_rows_in_parent_order_with_the_first_parents_columns() -> None:
    out = union(UnionSpec(datasets=REFS), [("a", A), ("b", B)])
    assert out.to_dict("list") == {"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}


def test_union_columns_take_the_shared_columns_of_wider_parents() -> None:
    wide = B.assign(row_id=["r1"])
    out = union(UnionSpec(datasets=REFS, columns=["y", "x"]), [("a", A), ("b", wide)])
    assert list(out.columns) == ["y", "x"] and len(out) == 3


@pytest.mark.parametrize("spec, b, words", [
    (UnionSpec(datasets=REFS), B.assign(z=[0]), "parent b has column 'z' that parent a lacks"),
    (UnionSpec(datasets=REFS), B.drop(columns="y"), "parent b has no column 'y' (parent a has it)"),
    (UnionSpec(datasets=REFS, columns=["x", "w"]), B, "parent a has no column 'w'"),
    (UnionSpec(datasets=REFS), B.assign(x=["three"]), "column 'x' holds different types: number in a, text in b"),
])
def test_union_mismatch_names_parent_and_column(spec: UnionSpec, b: pd.DataFrame, words: str) -> None:
    with pytest.raises(DataError) as err:
        union(spec, [("a", A), ("b", b)])
    assert err.value.reason == "ColumnMismatch" and words in err.value.message


PEOPLE = pd.DataFrame({"id": [1, 2, 3, None], "age": [30, 41, 25, 50]})
CITIES = pd.DataFrame({"id": [3, 1, None], "city": ["Oslo", "Lima", "Pune"]})


def test_inner_join_keeps_left_order_and_only_matches() -> None:
    out = join(JoinSpec(left=REFS[0], right=REFS[1], on=["id"]), ("people", PEOPLE), ("cities", CITIES))
    assert out.to_dict("list") == {"id": [1.0, 3.0], "age": [30, 25], "city": ["Lima", "Oslo"]}


def test_left_join_keeps_every_left_row_and_a_missing_key_matches_nothing() -> None:
    out = join(JoinSpec(left=REFS[0], right=REFS[1], on=["id"], how="left"), ("people", PEOPLE), ("cities", CITIES))
    assert out["age"].tolist() == [30, 41, 25, 50]
    assert out["city"].fillna("-").tolist() == ["Lima", "-", "Oslo", "-"]


@pytest.mark.parametrize("on, right, reason, words", [
    (["person"], CITIES, "JoinKeyMissing", "key column 'person' is not in people"),
    (["id"], pd.DataFrame({"id": [1, 2, 1], "city": ["a", "b", "c"]}), "JoinKeyNotUnique",
     "key (id) is not unique in cities: 1 at rows 0, 2"),
    (["id"], CITIES.assign(age=[1, 2, 3]), "ColumnMismatch", "column 'age' is in both people and cities"),
    (["id"], CITIES.assign(id=["3", "1", "x"]), "ColumnMismatch", "key column 'id' holds number in people but text"),
])
def test_join_errors_name_the_key_and_the_parent(on: list[str], right: pd.DataFrame, reason: str, words: str) -> None:
    with pytest.raises(DataError) as err:
        join(JoinSpec(left=REFS[0], right=REFS[1], on=on), ("people", PEOPLE), ("cities", right))
    assert err.value.reason == reason and words in err.value.message
