"""The operator's parameter check is plain data (api/param_values.py): it must say what scikit-learn says, and the
operator must never load scikit-learn, scipy or pandas (~250 MB of its memory at rest)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mloop.api.param_values import CONSTRAINTS, generate, parameter_error, search_error
from mloop.api.params import ESTIMATOR_PARAMS
from mloop.training.estimators import ParameterError, check_search_space, make_estimator

SAMPLES = [None, True, False, -1, 0, 1, 2, 3, 10, 2**32, -0.5, 0.0, 0.5, 1.0, 1.5, 1e9, float("nan"), "", "auto",
           "l2", "nope", [1, 2], [], {"a": 1}, {}]


def _sorted_sets(text: str) -> str:
    """scikit-learn lists a set of options in the process's hash order; compare them sorted."""
    return re.sub(r"\{([^{}]*)\}", lambda m: "{" + ", ".join(sorted(m[1].split(", "))) + "}", text)


def _sklearn_error(name: str, params: dict, where: str = "spec.estimator.params") -> str | None:
    try:
        make_estimator(name, params, 42, where=where)
    except ParameterError as err:
        return str(err)
    return None


def _values(rule: tuple) -> list:
    """The samples, every option, and each interval bound and its neighbours."""
    values = list(SAMPLES)
    for constraint in rule[1]:
        if constraint[0] == "options":
            values += list(constraint[1])
        if constraint[0] == "interval":
            for bound in constraint[2:4]:
                if bound is not None:
                    values += [bound, bound + 1, bound - 1, float(bound), bound + 0.25, bound - 0.25]
    return values


def test_the_copy_is_the_installed_scikit_learns() -> None:
    assert generate() == CONSTRAINTS, "run: python -m mloop.api.param_values"


@pytest.mark.parametrize("name", sorted(ESTIMATOR_PARAMS))
def test_every_value_is_judged_as_scikit_learn_judges_it(name: str) -> None:
    checked = refused = 0
    for param, rule in CONSTRAINTS[name].items():
        for value in _values(rule):
            ours, theirs = parameter_error(name, {param: value}), _sklearn_error(name, {param: value})
            assert (ours is None) == (theirs is None), (name, param, value, ours, theirs)
            if theirs is not None:
                assert _sorted_sets(ours) == _sorted_sets(theirs), (ours, theirs)
                refused += 1
            checked += 1
    assert checked > 0 and refused > 0


def test_unknown_and_managed_parameters_are_refused_with_their_path() -> None:
    assert parameter_error("GaussianNB", {"alpha": 1}).startswith(
        "spec.estimator.params.alpha: GaussianNB has no parameter 'alpha'; it takes: priors, var_smoothing")
    assert parameter_error("LogisticRegression", {"n_jobs": 2}) == (
        "spec.estimator.params.n_jobs: parameter 'n_jobs' is managed by mloop and cannot be set")
    assert parameter_error("LogisticRegression", {"C": 0.5, "max_iter": 300}) is None


def test_a_search_value_is_refused_under_the_search_path() -> None:
    space = {"penalty": ["l2", "l7"]}
    ours = search_error("LogisticRegression", space, {"C": 1.0})
    with pytest.raises(ParameterError) as theirs:
        check_search_space("LogisticRegression", space, {"C": 1.0}, 42)
    assert ours is not None and ours.startswith("spec.search.parameters.penalty: The 'penalty' parameter")
    assert _sorted_sets(ours) == _sorted_sets(str(theirs.value))
    assert search_error("LogisticRegression", {"C": [0.1, 1.0]}, None) is None


@pytest.mark.parametrize("search", [
    {"type": "grid", "parameters": {"C": [0.1, 1.0, 10.0], "penalty": ["l1", "l2"]}},
    {"type": "grid", "trials": 4, "parameters": {"C": [0.1, 1.0, 10.0], "penalty": ["l1", "l2"]}},
    {"type": "grid", "trials": 40, "parameters": {"C": [0.1, 1.0]}},
    {"type": "random", "parameters": {"C": [0.1, 1.0, 10.0], "tol": [1e-4, 1e-3, 1e-2, 1e-1]}},
    {"type": "random", "trials": 3, "parameters": {"C": [0.1, 1.0, 10.0], "tol": [1e-4, 1e-3]}},
    {"type": "random", "trials": 30, "parameters": {"C": [0.1, 1.0, 10.0]}},
])
def test_the_trial_count_is_the_searchs_candidate_count(search: dict) -> None:
    from mloop.api.trainingrun import SearchSpec
    from mloop.handlers.trainingrun import trial_count
    from mloop.training.search import candidates

    spec = SearchSpec.model_validate(search)
    assert trial_count(spec) == len(candidates(spec, 7))


GUARD = """
import json, sys
import mloop.handlers
from mloop.api.trainingrun import TrainingRunSpec
from mloop.handlers.trainingrun import _estimator_error, trial_count, trainer_environment
spec = lambda **change: TrainingRunSpec.model_validate({"datasetRef": {"name": "d"}, "target": "y",
    "estimator": {"name": "LogisticRegression", "params": {"C": 1.0}}, **change})
errors = [_estimator_error(spec()), _estimator_error(spec(estimator={"name": "LogisticRegression", "params": {"C": -1}})),
          _estimator_error(spec(search={"type": "grid", "parameters": {"penalty": ["l2", "l7"]}}))]
trials = trial_count(spec(search={"type": "random", "parameters": {"C": [1, 2]}}).search)
environment = trainer_environment()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "scipy", "pandas", "pyarrow", "skops"})
print(json.dumps({"errors": errors, "trials": trials, "libraries": len(environment["libraries"]), "heavy": heavy}))
"""


def test_the_operator_checks_a_run_without_loading_scikit_learn_scipy_or_pandas() -> None:
    out = json.loads(subprocess.run([sys.executable, "-c", GUARD], capture_output=True, text=True, check=True).stdout)
    assert out["errors"][0] is None
    assert out["errors"][1].startswith("spec.estimator.params.C: The 'C' parameter of LogisticRegression must be")
    assert out["errors"][2].startswith("spec.search.parameters.penalty: The 'penalty' parameter")
    assert out["trials"] == 2 and out["libraries"] > 0
    assert out["heavy"] == [], f"the operator loaded {out['heavy']}"
