"""Declarative preprocessing compiled into a Pipeline with a ColumnTransformer."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from mloop.api.trainingrun import PreprocessingSpec

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
NUMERIC_TYPES = {"integer", "float", "boolean"}


def split_columns(features: list[str], types: dict[str, str]) -> tuple[list[str], list[str]]:
    numeric = [f for f in features if types.get(f) in NUMERIC_TYPES]
    categorical = [f for f in features if f not in numeric]
    return numeric, categorical


def build_pipeline(estimator: Any, features: list[str], types: dict[str, str],
                   preprocessing: PreprocessingSpec | None) -> Pipeline:
    prep = preprocessing or PreprocessingSpec()
    numeric, categorical = split_columns(features, types)
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = []
        if prep.numeric.impute != "none":
            steps.append(("impute", SimpleImputer(strategy=prep.numeric.impute, fill_value=0)))
        if prep.numeric.scale != "none":
            steps.append(("scale", SCALERS[prep.numeric.scale]()))
        transformers.append(("numeric", Pipeline(steps) if steps else "passthrough", numeric))
    if categorical:
        steps = []
        if prep.categorical.impute != "none":
            steps.append(("impute", SimpleImputer(strategy=prep.categorical.impute, fill_value="missing")))
        if prep.categorical.encode == "onehot":
            steps.append(("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
        else:
            steps.append(("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)))
        transformers.append(("categorical", Pipeline(steps), categorical))
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])
