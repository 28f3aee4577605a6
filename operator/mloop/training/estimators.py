"""The estimator allow-list, and parameter checks against each class's own signature and constraints."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from mloop.api.trainingrun import CLASSIFIERS, REGRESSORS

MODULES = {
    "LogisticRegression": "linear_model", "RidgeClassifier": "linear_model", "SGDClassifier": "linear_model",
    "KNeighborsClassifier": "neighbors", "DecisionTreeClassifier": "tree", "RandomForestClassifier": "ensemble",
    "ExtraTreesClassifier": "ensemble", "GradientBoostingClassifier": "ensemble",
    "HistGradientBoostingClassifier": "ensemble", "SVC": "svm", "LinearSVC": "svm", "GaussianNB": "naive_bayes",
    "MLPClassifier": "neural_network", "LinearRegression": "linear_model", "Ridge": "linear_model",
    "Lasso": "linear_model", "ElasticNet": "linear_model", "SGDRegressor": "linear_model",
    "KNeighborsRegressor": "neighbors", "DecisionTreeRegressor": "tree", "RandomForestRegressor": "ensemble",
    "ExtraTreesRegressor": "ensemble", "GradientBoostingRegressor": "ensemble",
    "HistGradientBoostingRegressor": "ensemble", "SVR": "svm", "MLPRegressor": "neural_network",
}
# Parameters that would break reproducibility or isolation of a run.
FORBIDDEN = {"n_jobs", "warm_start", "verbose"}


class ParameterError(ValueError):
    """A parameter the estimator does not take, or a value it refuses. The message names it."""


def estimator_class(name: str) -> type:
    if name not in MODULES:
        raise ParameterError(f"estimator {name!r} is not in the allow-list")
    return getattr(importlib.import_module(f"sklearn.{MODULES[name]}"), name)


def task_of(name: str) -> str:
    return "classification" if name in CLASSIFIERS else "regression" if name in REGRESSORS else "unknown"


def make_estimator(name: str, params: dict[str, Any] | None, seed: int, where: str = "spec.estimator.params") -> Any:
    """An estimator with checked parameters; random_state defaults to the run's seed. A refusal starts with the
    parameter's field path under `where`, as the API server's refusals do."""
    cls = estimator_class(name)
    accepted = set(inspect.signature(cls).parameters)
    params = dict(params or {})
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ParameterError(f"{where}.{unknown[0]}: {name} has no parameter {unknown[0]!r}; "
                             f"it takes: {', '.join(sorted(accepted))}")
    forbidden = sorted(set(params) & FORBIDDEN)
    if forbidden:
        raise ParameterError(f"{where}.{forbidden[0]}: parameter {forbidden[0]!r} is managed by mloop and cannot be set")
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = seed
    estimator = cls(**params)
    try:
        estimator._validate_params()
    except Exception as err:  # sklearn's InvalidParameterError names the parameter and the allowed values
        named = re.match(r"The '(\w+)' parameter", str(err))
        raise ParameterError(f"{where}.{named.group(1)}: {err}" if named else str(err)) from err
    return estimator


def check_search_space(name: str, space: dict[str, list[Any]] | None, base: dict[str, Any] | None, seed: int) -> None:
    """Every candidate value of a search, checked like a parameter."""
    for param, values in (space or {}).items():
        for value in values:
            make_estimator(name, {**(base or {}), param: value}, seed, where="spec.search.parameters")
