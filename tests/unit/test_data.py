"""Table logic: canonical digests, schema checks, rules, filters, transforms, profiles and drift."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mloop.api.dataset import BuiltinSource, SchemaSpec, ValidationRules
from mloop.data.canonical import canonical_table, digest_table
from mloop.data.drift import psi, tvd
from mloop.data.errors import DataError
from mloop.data.expr import filter_rows
from mloop.data.profile import profile_frame
from mloop.data.tables import load_builtin, parse_bytes
from mloop.data.validate import apply_rules, apply_schema


def digest(frame: pd.DataFrame) -> str:
    return digest_table(canonical_table(frame)).version


FRAME = pd.DataFrame({"a": [1, 2, None], "b": ["x", None, "z"], "c": [0.5, 1.5, 2.5], "d": [True, False, True]})


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_same_rows_in_any_format_give_the_same_digest(fmt: str) -> None:
    if fmt == "csv":
        data = FRAME.to_csv(index=False).encode()
    elif fmt == "parquet":
        buf = io.BytesIO()
        FRAME.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        data = FRAME.to_json(orient="records", lines=True).encode()
    assert digest(parse_bytes(data, fmt, f"t.{fmt}")) == digest(FRAME)


def test_any_change_gives_a_new_digest() -> None:
    changed = FRAME.copy()
    changed.loc[2, "c"] = 2.5000001
    reordered = FRAME[["b", "a", "c", "d"]]
    renamed = FRAME.rename(columns={"a": "A"})
    assert len({digest(FRAME), digest(changed), digest(reordered), digest(renamed), digest(FRAME.iloc[:2])}) == 5


def test_a_null_differs_from_zero_and_from_empty_text() -> None:
    zero = FRAME.copy()
    zero.loc[2, "a"] = 0
    empty = FRAME.copy()
    empty.loc[1, "b"] = ""
    assert len({digest(FRAME), digest(zero), digest(empty)}) == 3


def test_builtin_tables_have_named_targets() -> None:
    iris = load_builtin(BuiltinSource(name="iris"))
    assert iris.shape == (150, 5) and set(iris["species"]) == {"setosa", "versicolor", "virginica"}
    cancer = load_builtin(BuiltinSource(name="breast_cancer"))
    assert set(cancer["diagnosis"]) == {"malignant", "benign"}
    assert load_builtin(BuiltinSource(name="diabetes"))["target"].dtype.kind == "f"
    assert load_builtin(BuiltinSource(name="digits")).shape == (1797, 65)


def test_wrong_delimiter_is_named() -> None:
    with pytest.raises(DataError) as err:
        parse_bytes(b"a;b;c\n1;2;3\n", "csv", "x.csv")
    assert err.value.reason == "WrongDelimiter"
    assert parse_bytes(b"a;b;c\n1;2;3\n", "csv", "x.csv", delimiter=";").shape == (1, 3)


def test_declared_types_cast_and_report_offending_rows() -> None:
    frame = pd.DataFrame({"n": ["1", "2", "x", "4.5"], "flag": ["yes", "no", "maybe", None]})
    schema = SchemaSpec.model_validate({"columns": [{"name": "n", "type": "integer"}, {"name": "flag", "type": "boolean"}]})
    result = apply_schema(frame, schema)
    failures = {c.column: c.message for c in result.checks if not c.passed}
    assert failures["n"] == "column 'n' is declared integer but rows 2, 3 hold ['x', '4.5']"
    assert failures["flag"].startswith("column 'flag' is declared boolean but rows 2 hold")


ALLOWED = ["red", "greenish", "", "blåbær", "a longer label"]  # 8 bytes, empty, multi-byte, longer (Arrow's lookup)


@pytest.mark.parametrize("storage", ["str", "object", "chunked", "sliced", "long"])
def test_allowed_values_name_the_first_rows_outside(storage: str) -> None:
    """Each way a text column reaches the check names the same rows as pandas' isin over the whole column."""
    rng = np.random.default_rng(1)
    values = rng.choice(ALLOWED[:4] + ["green", "red ", "re", "blåbæ", "greenis!", "reddish!"], 5000,
                        p=[0.22] * 4 + [0.02] * 6).astype(object)
    values[rng.integers(0, 5000, 50)] = None
    allowed = ALLOWED if storage == "long" else ALLOWED[:4]
    column = pd.Series(values, dtype="str")
    if storage == "object":
        column = pd.Series(values, dtype=object)
    elif storage == "chunked":  # a frame from several record batches holds chunked Arrow strings
        table = pa.Table.from_batches([pa.record_batch({"c": pa.array(values[i:i + 999], pa.string())})
                                       for i in range(0, 5000, 999)])
        column = table.to_pandas()["c"]
    elif storage == "sliced":
        column = pd.Series(np.concatenate([values[:7], values]), dtype="str").iloc[7:].reset_index(drop=True)
    schema = SchemaSpec.model_validate({"columns": [{"name": "c", "type": "category", "allowedValues": allowed}]})
    check = next(c for c in apply_schema(pd.DataFrame({"c": column}), schema).checks if c.rule == "allowedValues")
    outside = pd.Series(values).notna() & ~pd.Series(values).isin(allowed)
    rows = np.flatnonzero(outside.to_numpy())
    assert rows.size > 5 and not check.passed
    assert check.message == (f"column 'c' has values outside {sorted(allowed)[:10]} at rows "
                             f"{', '.join(str(r) for r in rows[:5])} and {rows.size - 5} more: "
                             f"{[values[r] for r in rows[:3]]!r}")
    inside = pd.DataFrame({"c": column.where(~outside.to_numpy(), allowed[1])})
    assert all(c.passed for c in apply_schema(inside, schema).checks)


def test_rules_report_each_result() -> None:
    frame = pd.DataFrame({"id": [1, 1, 2], "v": [None, None, 1.0]})
    checked = apply_rules(apply_schema(frame, None), ValidationRules(min_rows=2, max_null_fraction=0.5, unique=["id"]))
    outcome = {(c.rule, c.column): c.passed for c in checked.checks}
    assert outcome == {("minRows", None): True, ("maxNullFraction", "id"): True, ("maxNullFraction", "v"): False,
                       ("unique", "id"): False}


def test_empty_table_fails_even_without_rules() -> None:
    checked = apply_rules(apply_schema(pd.DataFrame({"a": []}), None), None)
    assert not checked.passed and checked.first_failure().message == "the table has no rows"


@pytest.mark.parametrize(
    "expr,rows",
    [("a >= 2", 1), ("a >= 1 and b == 'x'", 1), ("b in ['x', 'z']", 2), ("not (c < 1)", 2), ("a == 1 or d == False", 2)],
)
def test_filter_expressions(expr: str, rows: int) -> None:
    assert len(filter_rows(FRAME, expr)) == rows


@pytest.mark.parametrize("expr", ["__import__('os')", "a + 1 > 2", "missing == 1", "a >"])
def test_filter_refuses_anything_else(expr: str) -> None:
    with pytest.raises(DataError) as err:
        filter_rows(FRAME, expr)
    assert err.value.reason == "BadFilter"


def test_profile_numbers_and_categories() -> None:
    profile = {c["name"]: c for c in profile_frame(FRAME)["columns"]}
    assert profile["c"]["mean"] == 1.5 and profile["c"]["quantiles"]["0.5"] == 1.5
    assert profile["a"]["nulls"] == 1 and profile["b"]["top"][0]["count"] == 1


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert psi(base, rng.normal(size=5000)) < 0.05
    assert psi(base, rng.normal(loc=1.0, size=5000)) > 0.25
    assert tvd(pd.Series(list("aabb")), pd.Series(list("aabb"))) == 0.0
    assert tvd(pd.Series(list("aaaa")), pd.Series(list("bbbb"))) == 1.0
