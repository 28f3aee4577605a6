"""Constructor parameters a TrainingRun may set, per allow-listed estimator (scikit-learn 1.9).

Plain data, so the api package needs no scikit-learn at run time; crdgen turns it into admission rules and
tests/unit/test_crdgen.py checks it against the installed scikit-learn's signatures. Parameters mloop manages
(MANAGED) are left out."""

from __future__ import annotations

# Set by mloop itself, for reproducibility and isolation of a run.
MANAGED: tuple[str, ...] = ("n_jobs", "verbose", "warm_start")

ESTIMATOR_PARAMS: dict[str, tuple[str, ...]] = {
    "LogisticRegression": (
        "C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter", "penalty",
        "random_state", "solver", "tol",
    ),
    "RidgeClassifier": (
        "alpha", "class_weight", "copy_X", "fit_intercept", "max_iter", "positive", "random_state", "solver", "tol",
    ),
    "SGDClassifier": (
        "alpha", "average", "class_weight", "early_stopping", "epsilon", "eta0", "fit_intercept", "l1_ratio",
        "learning_rate", "loss", "max_iter", "n_iter_no_change", "penalty", "power_t", "random_state", "shuffle",
        "tol", "validation_fraction",
    ),
    "KNeighborsClassifier": ("algorithm", "leaf_size", "metric", "metric_params", "n_neighbors", "p", "weights"),
    "DecisionTreeClassifier": (
        "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
        "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf", "monotonic_cst",
        "random_state", "splitter",
    ),
    "RandomForestClassifier": (
        "bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
        "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf",
        "monotonic_cst", "n_estimators", "oob_score", "random_state",
    ),
    "ExtraTreesClassifier": (
        "bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
        "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf",
        "monotonic_cst", "n_estimators", "oob_score", "random_state",
    ),
    "GradientBoostingClassifier": (
        "ccp_alpha", "criterion", "init", "learning_rate", "loss", "max_depth", "max_features", "max_leaf_nodes",
        "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf", "n_estimators",
        "n_iter_no_change", "random_state", "subsample", "tol", "validation_fraction",
    ),
    "HistGradientBoostingClassifier": (
        "categorical_features", "class_weight", "early_stopping", "interaction_cst", "l2_regularization",
        "learning_rate", "loss", "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes",
        "min_samples_leaf", "monotonic_cst", "n_iter_no_change", "random_state", "scoring", "tol",
        "validation_fraction",
    ),
    "SVC": (
        "C", "break_ties", "cache_size", "class_weight", "coef0", "decision_function_shape", "degree", "gamma",
        "kernel", "max_iter", "probability", "random_state", "shrinking", "tol",
    ),
    "LinearSVC": (
        "C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "loss", "max_iter", "multi_class",
        "penalty", "random_state", "tol",
    ),
    "GaussianNB": ("priors", "var_smoothing"),
    "MLPClassifier": (
        "activation", "alpha", "batch_size", "beta_1", "beta_2", "early_stopping", "epsilon", "hidden_layer_sizes",
        "learning_rate", "learning_rate_init", "max_fun", "max_iter", "momentum", "n_iter_no_change",
        "nesterovs_momentum", "power_t", "random_state", "shuffle", "solver", "tol", "validation_fraction",
    ),
    "LinearRegression": ("copy_X", "fit_intercept", "positive", "tol"),
    "Ridge": ("alpha", "copy_X", "fit_intercept", "max_iter", "positive", "random_state", "solver", "tol"),
    "Lasso": (
        "alpha", "copy_X", "fit_intercept", "max_iter", "positive", "precompute", "random_state", "selection", "tol",
    ),
    "ElasticNet": (
        "alpha", "copy_X", "fit_intercept", "l1_ratio", "max_iter", "positive", "precompute", "random_state",
        "selection", "tol",
    ),
    "SGDRegressor": (
        "alpha", "average", "early_stopping", "epsilon", "eta0", "fit_intercept", "l1_ratio", "learning_rate", "loss",
        "max_iter", "n_iter_no_change", "penalty", "power_t", "random_state", "shuffle", "tol", "validation_fraction",
    ),
    "KNeighborsRegressor": ("algorithm", "leaf_size", "metric", "metric_params", "n_neighbors", "p", "weights"),
    "DecisionTreeRegressor": (
        "ccp_alpha", "criterion", "max_depth", "max_features", "max_leaf_nodes", "min_impurity_decrease",
        "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf", "monotonic_cst", "random_state",
        "splitter",
    ),
    "RandomForestRegressor": (
        "bootstrap", "ccp_alpha", "criterion", "max_depth", "max_features", "max_leaf_nodes", "max_samples",
        "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf", "monotonic_cst",
        "n_estimators", "oob_score", "random_state",
    ),
    "ExtraTreesRegressor": (
        "bootstrap", "ccp_alpha", "criterion", "max_depth", "max_features", "max_leaf_nodes", "max_samples",
        "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf", "monotonic_cst",
        "n_estimators", "oob_score", "random_state",
    ),
    "GradientBoostingRegressor": (
        "alpha", "ccp_alpha", "criterion", "init", "learning_rate", "loss", "max_depth", "max_features",
        "max_leaf_nodes", "min_impurity_decrease", "min_samples_leaf", "min_samples_split",
        "min_weight_fraction_leaf", "n_estimators", "n_iter_no_change", "random_state", "subsample", "tol",
        "validation_fraction",
    ),
    "HistGradientBoostingRegressor": (
        "categorical_features", "early_stopping", "interaction_cst", "l2_regularization", "learning_rate", "loss",
        "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes", "min_samples_leaf", "monotonic_cst",
        "n_iter_no_change", "quantile", "random_state", "scoring", "tol", "validation_fraction",
    ),
    "SVR": ("C", "cache_size", "coef0", "degree", "epsilon", "gamma", "kernel", "max_iter", "shrinking", "tol"),
    "MLPRegressor": (
        "activation", "alpha", "batch_size", "beta_1", "beta_2", "early_stopping", "epsilon", "hidden_layer_sizes",
        "learning_rate", "learning_rate_init", "loss", "max_fun", "max_iter", "momentum", "n_iter_no_change",
        "nesterovs_momentum", "power_t", "random_state", "shuffle", "solver", "tol", "validation_fraction",
    ),
}

# A parameter name is a Python identifier, with __ only between parts.
PARAM_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(__[A-Za-z][A-Za-z0-9_]*)*$"


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


_VARIABLES = [
    {"name": "estimatorParams",
     "expression": "{" + ", ".join(f"'{k}': {_cel_list(v)}" for k, v in ESTIMATOR_PARAMS.items()) + "}"},
    {"name": "managedParams", "expression": _cel_list(MANAGED)},
]


def estimator_param_rules(params: str, estimator: str, present: str) -> list[dict[str, object]]:
    """Admission rules (see common.ADMISSION_RULES) on a node whose `params` map is keyed by parameters of the
    estimator named at `estimator`, checked when the CEL test `present` holds: no parameter mloop manages, none
    the estimator lacks. Names that are not identifiers are left to the map's key rule."""
    keys = f"self.{params}"
    managed = f"{keys}.filter(k, k in variables.managedParams)"
    allowed = f"variables.estimatorParams[self.{estimator}]"
    unknown = (f"{keys}.filter(k, k.matches('{PARAM_PATTERN}') && !(k in variables.managedParams) "
               f"&& !(k in {allowed}))")
    return [
        {"expression": f"!({present}) || size({managed}) == 0", "variables": _VARIABLES,
         "messageExpression": f"'.{params}.' + {managed}[0] + ': mloop sets this parameter for every run; leave it out'"},
        {"expression": f"!({present}) || size({unknown}) == 0", "variables": _VARIABLES,
         "messageExpression": f"'.{params}.' + {unknown}[0] + ': ' + self.{estimator} + ' has no parameter of that "
                              f"name; it takes ' + {allowed}.join(', ')"},
    ]
