"""A small, safe row filter: comparisons of columns with literals, joined by and/or/not.

    "age >= 18 and plan in ['pro', 'team']"   "not (species == 'setosa')"

Parsed with Python's ast and evaluated on pandas columns; nothing is executed.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np
import pandas as pd

from mloop.data.errors import DataError

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def _literal(node: ast.AST, expr: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError as err:
        raise DataError("BadFilter", f"filter {expr!r}: expected a literal, got {ast.unparse(node)!r}") from err


def _column(node: ast.AST, frame: pd.DataFrame, expr: str) -> pd.Series:
    if not isinstance(node, ast.Name):
        raise DataError("BadFilter", f"filter {expr!r}: expected a column name, got {ast.unparse(node)!r}")
    if node.id not in frame.columns:
        raise DataError("BadFilter", f"filter {expr!r}: no column {node.id!r}")
    return frame[node.id]


def _eval(node: ast.AST, frame: pd.DataFrame, expr: str) -> pd.Series:
    if isinstance(node, ast.BoolOp):
        parts = [_eval(v, frame, expr) for v in node.values]
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if isinstance(node.op, ast.And) else (result | part)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_eval(node.operand, frame, expr)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        column = _column(left, frame, expr)
        if isinstance(op, (ast.In, ast.NotIn)):
            values = _literal(right, expr)
            if not isinstance(values, (list, tuple, set)):
                raise DataError("BadFilter", f"filter {expr!r}: 'in' needs a list")
            mask = column.isin(list(values))
            return ~mask if isinstance(op, ast.NotIn) else mask
        if type(op) in _COMPARE:
            return _COMPARE[type(op)](column, _literal(right, expr)).fillna(False).astype(bool)
    raise DataError("BadFilter", f"filter {expr!r}: only comparisons joined by and/or/not are allowed")


def row_mask(frame: pd.DataFrame, expr: str) -> np.ndarray:
    """Which rows the filter keeps (a missing value compares false)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise DataError("BadFilter", f"filter {expr!r}: {err.msg}") from err
    return _eval(tree.body, frame, expr).fillna(False).to_numpy(dtype=bool)


def filter_rows(frame: pd.DataFrame, expr: str) -> pd.DataFrame:
    return frame[row_mask(frame, expr)].reset_index(drop=True)
