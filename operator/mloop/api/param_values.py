"""The values each allow-listed estimator's parameters take, as plain data, and the check the operator runs.

scikit-learn would cost the operator ~250 MB and a second of start-up per process, so its `_parameter_constraints`
are copied here (`python -m mloop.api.param_values` rewrites CONSTRAINTS from the installed scikit-learn;
tests/unit/test_param_values.py checks the copy and that both refuse the same values with the same message). Values
come from a Kubernetes object, so only JSON values are judged: a constraint no JSON value can meet (a callable, an
object with methods) is kept as "never". The trainer still builds the estimator with scikit-learn's own check.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from mloop.api.params import ESTIMATOR_PARAMS, MANAGED

# estimator -> parameter -> (the refusal's "must be ..." text, constraints); a constraint is a tuple:
# ("interval", "int" | "real" | "real_not_int", left, right, closed), ("options", (values, ...)), ("none",),
# ("boolean",), ("random_state",), ("verbose",), ("array-like",), ("instance", "dict" | "list" | "str" | "int" |
# "real"), ("never",). Hidden constraints (accepted, not named in the message) are in the tuple too.
# BEGIN GENERATED
CONSTRAINTS: dict[str, dict[str, tuple[str, tuple[tuple[Any, ...], ...]]]] = {
    'LogisticRegression': {
        'C': ('a float in the range (0.0, inf]', (('interval', 'real', 0, None, 'right'),)),
        'class_weight': ("an instance of 'dict', a str among {'balanced'} or None", (('instance', 'dict'), ('options', ('balanced',)), ('none',))),
        'dual': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'intercept_scaling': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'l1_ratio': ('a float in the range [0.0, 1.0] or None', (('interval', 'real', 0, 1, 'both'), ('none',))),
        'max_iter': ('an int in the range [0, inf)', (('interval', 'int', 0, None, 'left'),)),
        'penalty': ("a str among {'elasticnet', 'l1', 'l2'} or None", (('options', ('elasticnet', 'l1', 'l2')), ('none',), ('options', ('deprecated',)))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'solver': ("a str among {'lbfgs', 'liblinear', 'newton-cg', 'newton-cholesky', 'sag', 'saga'}", (('options', ('lbfgs', 'liblinear', 'newton-cg', 'newton-cholesky', 'sag', 'saga')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'RidgeClassifier': {
        'alpha': ('a float in the range [0.0, inf) or an array-like', (('interval', 'real', 0, None, 'left'), ('array-like',))),
        'class_weight': ("an instance of 'dict', a str among {'balanced'} or None", (('instance', 'dict'), ('options', ('balanced',)), ('none',))),
        'copy_X': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'max_iter': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'positive': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'solver': ("a str among {'auto', 'cholesky', 'lbfgs', 'lsqr', 'sag', 'saga', 'sparse_cg', 'svd'}", (('options', ('auto', 'cholesky', 'lbfgs', 'lsqr', 'sag', 'saga', 'sparse_cg', 'svd')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'SGDClassifier': {
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'average': ("an int in the range (0, inf) or an instance of 'bool' or an instance of 'numpy.bool'", (('interval', 'int', 0, None, 'neither'), ('boolean',))),
        'class_weight': ("a str among {'balanced'}, an instance of 'dict' or None", (('options', ('balanced',)), ('instance', 'dict'), ('none',))),
        'early_stopping': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'epsilon': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'eta0': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'l1_ratio': ('a float in the range [0.0, 1.0] or None', (('interval', 'real', 0, 1, 'both'), ('none',))),
        'learning_rate': ("a str among {'adaptive', 'constant', 'invscaling', 'optimal', 'pa1', 'pa2'}", (('options', ('adaptive', 'constant', 'invscaling', 'optimal', 'pa1', 'pa2')),)),
        'loss': ("a str among {'epsilon_insensitive', 'hinge', 'huber', 'log_loss', 'modified_huber', 'perceptron', 'squared_epsilon_insensitive', 'squared_error', 'squared_hinge'}", (('options', ('epsilon_insensitive', 'hinge', 'huber', 'log_loss', 'modified_huber', 'perceptron', 'squared_epsilon_insensitive', 'squared_error', 'squared_hinge')),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'n_iter_no_change': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'penalty': ("a str among {'elasticnet', 'l1', 'l2'} or None", (('options', ('elasticnet', 'l1', 'l2')), ('none',))),
        'power_t': ('a float in the range (-inf, inf)', (('interval', 'real', None, None, 'neither'),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'shuffle': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'tol': ('a float in the range [0.0, inf) or None', (('interval', 'real', 0, None, 'left'), ('none',))),
        'validation_fraction': ('a float in the range (0.0, 1.0)', (('interval', 'real', 0, 1, 'neither'),)),
    },
    'KNeighborsClassifier': {
        'algorithm': ("a str among {'auto', 'ball_tree', 'brute', 'kd_tree'}", (('options', ('auto', 'ball_tree', 'brute', 'kd_tree')),)),
        'leaf_size': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'metric': ("a str among {'braycurtis', 'canberra', 'chebyshev', 'cityblock', 'correlation', 'cosine', 'dice', 'euclidean', 'hamming', 'haversine', 'infinity', 'jaccard', 'l1', 'l2', 'mahalanobis', 'manhattan', 'minkowski', 'nan_euclidean', 'p', 'precomputed', 'pyfunc', 'rogerstanimoto', 'russellrao', 'seuclidean', 'sokalmichener', 'sokalsneath', 'sqeuclidean', 'yule'}, a callable or an instance of 'sklearn.metrics._dist_metrics.DistanceMetric'", (('options', ('braycurtis', 'canberra', 'chebyshev', 'cityblock', 'correlation', 'cosine', 'dice', 'euclidean', 'hamming', 'haversine', 'infinity', 'jaccard', 'l1', 'l2', 'mahalanobis', 'manhattan', 'minkowski', 'nan_euclidean', 'p', 'precomputed', 'pyfunc', 'rogerstanimoto', 'russellrao', 'seuclidean', 'sokalmichener', 'sokalsneath', 'sqeuclidean', 'yule')), ('never',), ('never',))),
        'metric_params': ("an instance of 'dict' or None", (('instance', 'dict'), ('none',))),
        'n_neighbors': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'p': ('a float in the range (0.0, inf] or None', (('interval', 'real', 0, None, 'right'), ('none',))),
        'weights': ("a str among {'distance', 'uniform'}, a callable or None", (('options', ('distance', 'uniform')), ('never',), ('none',))),
    },
    'DecisionTreeClassifier': {
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'class_weight': ("an instance of 'dict', an instance of 'list', a str among {'balanced'} or None", (('instance', 'dict'), ('instance', 'list'), ('options', ('balanced',)), ('none',))),
        'criterion': ("a str among {'entropy', 'gini', 'log_loss'}", (('options', ('entropy', 'gini', 'log_loss')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'splitter': ("a str among {'best', 'random'}", (('options', ('best', 'random')),)),
    },
    'RandomForestClassifier': {
        'bootstrap': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'class_weight': ("a str among {'balanced', 'balanced_subsample'}, an instance of 'dict', an instance of 'list' or None", (('options', ('balanced', 'balanced_subsample')), ('instance', 'dict'), ('instance', 'list'), ('none',))),
        'criterion': ("a str among {'entropy', 'gini', 'log_loss'}", (('options', ('entropy', 'gini', 'log_loss')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'max_samples': ('None, a float in the range (0.0, inf) or an int in the range [1, inf)', (('none',), ('interval', 'real_not_int', 0.0, None, 'neither'), ('interval', 'int', 1, None, 'left'))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'oob_score': ("an instance of 'bool' or an instance of 'numpy.bool' or a callable", (('boolean',), ('never',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
    },
    'ExtraTreesClassifier': {
        'bootstrap': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'class_weight': ("a str among {'balanced', 'balanced_subsample'}, an instance of 'dict', an instance of 'list' or None", (('options', ('balanced', 'balanced_subsample')), ('instance', 'dict'), ('instance', 'list'), ('none',))),
        'criterion': ("a str among {'entropy', 'gini', 'log_loss'}", (('options', ('entropy', 'gini', 'log_loss')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'max_samples': ('None, a float in the range (0.0, inf) or an int in the range [1, inf)', (('none',), ('interval', 'real_not_int', 0.0, None, 'neither'), ('interval', 'int', 1, None, 'left'))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'oob_score': ("an instance of 'bool' or an instance of 'numpy.bool' or a callable", (('boolean',), ('never',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
    },
    'GradientBoostingClassifier': {
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'criterion': ("a str among {'squared_error'}", (('options', ('squared_error',)), ('options', ('deprecated', 'friedman_mse')))),
        'init': ("a str among {'zero'}, None or an object implementing 'fit' and 'predict_proba'", (('options', ('zero',)), ('none',), ('never',))),
        'learning_rate': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'loss': ("a str among {'exponential', 'log_loss'}", (('options', ('exponential', 'log_loss')),)),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'n_iter_no_change': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'subsample': ('a float in the range (0.0, 1.0]', (('interval', 'real', 0.0, 1.0, 'right'),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'validation_fraction': ('a float in the range (0.0, 1.0)', (('interval', 'real', 0.0, 1.0, 'neither'),)),
    },
    'HistGradientBoostingClassifier': {
        'categorical_features': ("an array-like, a str among {'from_dtype'} or None", (('array-like',), ('options', ('from_dtype',)), ('none',))),
        'class_weight': ("an instance of 'dict', a str among {'balanced'} or None", (('instance', 'dict'), ('options', ('balanced',)), ('none',))),
        'early_stopping': ("a str among {'auto'} or an instance of 'bool' or an instance of 'numpy.bool'", (('options', ('auto',)), ('boolean',))),
        'interaction_cst': ("an instance of 'list', an instance of 'tuple', a str among {'no_interactions', 'pairwise'} or None", (('instance', 'list'), ('never',), ('options', ('no_interactions', 'pairwise')), ('none',))),
        'l2_regularization': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'learning_rate': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'loss': ("a str among {'log_loss'} or an instance of 'sklearn._loss.loss.BaseLoss'", (('options', ('log_loss',)), ('never',))),
        'max_bins': ('an int in the range [2, 255]', (('interval', 'int', 2, 255, 'both'),)),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ('a float in the range (0.0, 1.0]', (('interval', 'real_not_int', 0, 1, 'right'),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_samples_leaf': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'monotonic_cst': ("an array-like, an instance of 'dict' or None", (('array-like',), ('instance', 'dict'), ('none',))),
        'n_iter_no_change': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'scoring': ("an instance of 'str', a callable or None", (('instance', 'str'), ('never',), ('none',))),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'validation_fraction': ('a float in the range (0.0, 1.0), an int in the range [1, inf) or None', (('interval', 'real_not_int', 0, 1, 'neither'), ('interval', 'int', 1, None, 'left'), ('none',))),
    },
    'SVC': {
        'C': ('a float in the range (0.0, inf]', (('interval', 'real', 0.0, None, 'right'),)),
        'break_ties': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'cache_size': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'class_weight': ("a str among {'balanced'}, an instance of 'dict' or None", (('options', ('balanced',)), ('instance', 'dict'), ('none',))),
        'coef0': ('a float in the range (-inf, inf)', (('interval', 'real', None, None, 'neither'),)),
        'decision_function_shape': ("a str among {'ovo', 'ovr'}", (('options', ('ovo', 'ovr')),)),
        'degree': ('an int in the range [0, inf)', (('interval', 'int', 0, None, 'left'),)),
        'gamma': ("a str among {'auto', 'scale'} or a float in the range [0.0, inf)", (('options', ('auto', 'scale')), ('interval', 'real', 0.0, None, 'left'))),
        'kernel': ("a str among {'linear', 'poly', 'precomputed', 'rbf', 'sigmoid'} or a callable", (('options', ('linear', 'poly', 'precomputed', 'rbf', 'sigmoid')), ('never',))),
        'max_iter': ('an int in the range [-1, inf)', (('interval', 'int', -1, None, 'left'),)),
        'probability': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',), ('options', ('deprecated',)))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'shrinking': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'tol': ('a float in the range (0.0, inf)', (('interval', 'real', 0.0, None, 'neither'),)),
    },
    'LinearSVC': {
        'C': ('a float in the range (0.0, inf)', (('interval', 'real', 0.0, None, 'neither'),)),
        'class_weight': ("None, an instance of 'dict' or a str among {'balanced'}", (('none',), ('instance', 'dict'), ('options', ('balanced',)))),
        'dual': ("an instance of 'bool' or an instance of 'numpy.bool' or a str among {'auto'}", (('boolean',), ('options', ('auto',)))),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'intercept_scaling': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'loss': ("a str among {'hinge', 'squared_hinge'}", (('options', ('hinge', 'squared_hinge')),)),
        'max_iter': ('an int in the range [0, inf)', (('interval', 'int', 0, None, 'left'),)),
        'multi_class': ("a str among {'crammer_singer', 'ovr'}", (('options', ('crammer_singer', 'ovr')),)),
        'penalty': ("a str among {'l1', 'l2'}", (('options', ('l1', 'l2')),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'tol': ('a float in the range (0.0, inf)', (('interval', 'real', 0.0, None, 'neither'),)),
    },
    'GaussianNB': {
        'priors': ('an array-like or None', (('array-like',), ('none',))),
        'var_smoothing': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'MLPClassifier': {
        'activation': ("a str among {'identity', 'logistic', 'relu', 'tanh'}", (('options', ('identity', 'logistic', 'relu', 'tanh')),)),
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'batch_size': ("a str among {'auto'} or an int in the range [1, inf)", (('options', ('auto',)), ('interval', 'int', 1, None, 'left'))),
        'beta_1': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
        'beta_2': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
        'early_stopping': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'epsilon': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'hidden_layer_sizes': ('an array-like or an int in the range [1, inf)', (('array-like',), ('interval', 'int', 1, None, 'left'))),
        'learning_rate': ("a str among {'adaptive', 'constant', 'invscaling'}", (('options', ('adaptive', 'constant', 'invscaling')),)),
        'learning_rate_init': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'max_fun': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'momentum': ('a float in the range [0.0, 1.0]', (('interval', 'real', 0, 1, 'both'),)),
        'n_iter_no_change': ('an int in the range [1, inf) or a float among {inf}', (('interval', 'int', 1, None, 'left'), ('never',))),
        'nesterovs_momentum': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'power_t': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'shuffle': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'solver': ("a str among {'adam', 'lbfgs', 'sgd'}", (('options', ('adam', 'lbfgs', 'sgd')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'validation_fraction': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
    },
    'LinearRegression': {
        'copy_X': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'positive': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'Ridge': {
        'alpha': ('a float in the range [0.0, inf) or an array-like', (('interval', 'real', 0, None, 'left'), ('array-like',))),
        'copy_X': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'max_iter': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'positive': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'solver': ("a str among {'auto', 'cholesky', 'lbfgs', 'lsqr', 'sag', 'saga', 'sparse_cg', 'svd'}", (('options', ('auto', 'cholesky', 'lbfgs', 'lsqr', 'sag', 'saga', 'sparse_cg', 'svd')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'Lasso': {
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'copy_X': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'max_iter': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'positive': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'precompute': ("an instance of 'bool' or an instance of 'numpy.bool' or an array-like", (('boolean',), ('array-like',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'selection': ("a str among {'cyclic', 'random'}", (('options', ('cyclic', 'random')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'ElasticNet': {
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'copy_X': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'l1_ratio': ('a float in the range [0.0, 1.0]', (('interval', 'real', 0, 1, 'both'),)),
        'max_iter': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'positive': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'precompute': ("an instance of 'bool' or an instance of 'numpy.bool' or an array-like", (('boolean',), ('array-like',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'selection': ("a str among {'cyclic', 'random'}", (('options', ('cyclic', 'random')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
    },
    'SGDRegressor': {
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'average': ("an int in the range (0, inf) or an instance of 'bool' or an instance of 'numpy.bool'", (('interval', 'int', 0, None, 'neither'), ('boolean',))),
        'early_stopping': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'epsilon': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'eta0': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'fit_intercept': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'l1_ratio': ('a float in the range [0.0, 1.0] or None', (('interval', 'real', 0, 1, 'both'), ('none',))),
        'learning_rate': ("a str among {'adaptive', 'constant', 'invscaling', 'optimal', 'pa1', 'pa2'}", (('options', ('adaptive', 'constant', 'invscaling', 'optimal', 'pa1', 'pa2')),)),
        'loss': ("a str among {'epsilon_insensitive', 'huber', 'squared_epsilon_insensitive', 'squared_error'}", (('options', ('epsilon_insensitive', 'huber', 'squared_epsilon_insensitive', 'squared_error')),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'n_iter_no_change': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'penalty': ("a str among {'elasticnet', 'l1', 'l2'} or None", (('options', ('elasticnet', 'l1', 'l2')), ('none',))),
        'power_t': ('a float in the range (-inf, inf)', (('interval', 'real', None, None, 'neither'),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'shuffle': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'tol': ('a float in the range [0.0, inf) or None', (('interval', 'real', 0, None, 'left'), ('none',))),
        'validation_fraction': ('a float in the range (0.0, 1.0)', (('interval', 'real', 0, 1, 'neither'),)),
    },
    'KNeighborsRegressor': {
        'algorithm': ("a str among {'auto', 'ball_tree', 'brute', 'kd_tree'}", (('options', ('auto', 'ball_tree', 'brute', 'kd_tree')),)),
        'leaf_size': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'metric': ("a str among {'braycurtis', 'canberra', 'chebyshev', 'cityblock', 'correlation', 'cosine', 'dice', 'euclidean', 'hamming', 'haversine', 'infinity', 'jaccard', 'l1', 'l2', 'mahalanobis', 'manhattan', 'minkowski', 'nan_euclidean', 'p', 'precomputed', 'pyfunc', 'rogerstanimoto', 'russellrao', 'seuclidean', 'sokalmichener', 'sokalsneath', 'sqeuclidean', 'yule'}, a callable or an instance of 'sklearn.metrics._dist_metrics.DistanceMetric'", (('options', ('braycurtis', 'canberra', 'chebyshev', 'cityblock', 'correlation', 'cosine', 'dice', 'euclidean', 'hamming', 'haversine', 'infinity', 'jaccard', 'l1', 'l2', 'mahalanobis', 'manhattan', 'minkowski', 'nan_euclidean', 'p', 'precomputed', 'pyfunc', 'rogerstanimoto', 'russellrao', 'seuclidean', 'sokalmichener', 'sokalsneath', 'sqeuclidean', 'yule')), ('never',), ('never',))),
        'metric_params': ("an instance of 'dict' or None", (('instance', 'dict'), ('none',))),
        'n_neighbors': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'p': ('a float in the range (0.0, inf] or None', (('interval', 'real', 0, None, 'right'), ('none',))),
        'weights': ("a str among {'distance', 'uniform'}, a callable or None", (('options', ('distance', 'uniform')), ('never',), ('none',))),
    },
    'DecisionTreeRegressor': {
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'criterion': ("a str among {'absolute_error', 'poisson', 'squared_error'}", (('options', ('absolute_error', 'poisson', 'squared_error')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'splitter': ("a str among {'best', 'random'}", (('options', ('best', 'random')),)),
    },
    'RandomForestRegressor': {
        'bootstrap': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'criterion': ("a str among {'absolute_error', 'poisson', 'squared_error'}", (('options', ('absolute_error', 'poisson', 'squared_error')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'max_samples': ('None, a float in the range (0.0, inf) or an int in the range [1, inf)', (('none',), ('interval', 'real_not_int', 0.0, None, 'neither'), ('interval', 'int', 1, None, 'left'))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'oob_score': ("an instance of 'bool' or an instance of 'numpy.bool' or a callable", (('boolean',), ('never',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
    },
    'ExtraTreesRegressor': {
        'bootstrap': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'criterion': ("a str among {'absolute_error', 'poisson', 'squared_error'}", (('options', ('absolute_error', 'poisson', 'squared_error')), ('never',))),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'max_samples': ('None, a float in the range (0.0, inf) or an int in the range [1, inf)', (('none',), ('interval', 'real_not_int', 0.0, None, 'neither'), ('interval', 'int', 1, None, 'left'))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'monotonic_cst': ('an array-like or None', (('array-like',), ('none',))),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'oob_score': ("an instance of 'bool' or an instance of 'numpy.bool' or a callable", (('boolean',), ('never',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
    },
    'GradientBoostingRegressor': {
        'alpha': ('a float in the range (0.0, 1.0)', (('interval', 'real', 0.0, 1.0, 'neither'),)),
        'ccp_alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'criterion': ("a str among {'squared_error'}", (('options', ('squared_error',)), ('options', ('deprecated', 'friedman_mse')))),
        'init': ("a str among {'zero'}, None or an object implementing 'fit' and 'predict'", (('options', ('zero',)), ('none',), ('never',))),
        'learning_rate': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'loss': ("a str among {'absolute_error', 'huber', 'quantile', 'squared_error'}", (('options', ('absolute_error', 'huber', 'quantile', 'squared_error')),)),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ("an int in the range [1, inf), a float in the range (0.0, 1.0], a str among {'log2', 'sqrt'} or None", (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'), ('options', ('log2', 'sqrt')), ('none',))),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_impurity_decrease': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'min_samples_leaf': ('an int in the range [1, inf) or a float in the range (0.0, 1.0)', (('interval', 'int', 1, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'neither'))),
        'min_samples_split': ('an int in the range [2, inf) or a float in the range (0.0, 1.0]', (('interval', 'int', 2, None, 'left'), ('interval', 'real_not_int', 0.0, 1.0, 'right'))),
        'min_weight_fraction_leaf': ('a float in the range [0.0, 0.5]', (('interval', 'real', 0.0, 0.5, 'both'),)),
        'n_estimators': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'n_iter_no_change': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'subsample': ('a float in the range (0.0, 1.0]', (('interval', 'real', 0.0, 1.0, 'right'),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'validation_fraction': ('a float in the range (0.0, 1.0)', (('interval', 'real', 0.0, 1.0, 'neither'),)),
    },
    'HistGradientBoostingRegressor': {
        'categorical_features': ("an array-like, a str among {'from_dtype'} or None", (('array-like',), ('options', ('from_dtype',)), ('none',))),
        'early_stopping': ("a str among {'auto'} or an instance of 'bool' or an instance of 'numpy.bool'", (('options', ('auto',)), ('boolean',))),
        'interaction_cst': ("an instance of 'list', an instance of 'tuple', a str among {'no_interactions', 'pairwise'} or None", (('instance', 'list'), ('never',), ('options', ('no_interactions', 'pairwise')), ('none',))),
        'l2_regularization': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'learning_rate': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'loss': ("a str among {'absolute_error', 'gamma', 'poisson', 'quantile', 'squared_error'} or an instance of 'sklearn._loss.loss.BaseLoss'", (('options', ('absolute_error', 'gamma', 'poisson', 'quantile', 'squared_error')), ('never',))),
        'max_bins': ('an int in the range [2, 255]', (('interval', 'int', 2, 255, 'both'),)),
        'max_depth': ('an int in the range [1, inf) or None', (('interval', 'int', 1, None, 'left'), ('none',))),
        'max_features': ('a float in the range (0.0, 1.0]', (('interval', 'real_not_int', 0, 1, 'right'),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'max_leaf_nodes': ('an int in the range [2, inf) or None', (('interval', 'int', 2, None, 'left'), ('none',))),
        'min_samples_leaf': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'monotonic_cst': ("an array-like, an instance of 'dict' or None", (('array-like',), ('instance', 'dict'), ('none',))),
        'n_iter_no_change': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'quantile': ('a float in the range [0.0, 1.0] or None', (('interval', 'real', 0, 1, 'both'), ('none',))),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'scoring': ("an instance of 'str', a callable or None", (('instance', 'str'), ('never',), ('none',))),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'validation_fraction': ('a float in the range (0.0, 1.0), an int in the range [1, inf) or None', (('interval', 'real_not_int', 0, 1, 'neither'), ('interval', 'int', 1, None, 'left'), ('none',))),
    },
    'SVR': {
        'C': ('a float in the range (0.0, inf]', (('interval', 'real', 0.0, None, 'right'),)),
        'cache_size': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'coef0': ('a float in the range (-inf, inf)', (('interval', 'real', None, None, 'neither'),)),
        'degree': ('an int in the range [0, inf)', (('interval', 'int', 0, None, 'left'),)),
        'epsilon': ('a float in the range [0.0, inf)', (('interval', 'real', 0.0, None, 'left'),)),
        'gamma': ("a str among {'auto', 'scale'} or a float in the range [0.0, inf)", (('options', ('auto', 'scale')), ('interval', 'real', 0.0, None, 'left'))),
        'kernel': ("a str among {'linear', 'poly', 'precomputed', 'rbf', 'sigmoid'} or a callable", (('options', ('linear', 'poly', 'precomputed', 'rbf', 'sigmoid')), ('never',))),
        'max_iter': ('an int in the range [-1, inf)', (('interval', 'int', -1, None, 'left'),)),
        'shrinking': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'tol': ('a float in the range (0.0, inf)', (('interval', 'real', 0.0, None, 'neither'),)),
    },
    'MLPRegressor': {
        'activation': ("a str among {'identity', 'logistic', 'relu', 'tanh'}", (('options', ('identity', 'logistic', 'relu', 'tanh')),)),
        'alpha': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'batch_size': ("a str among {'auto'} or an int in the range [1, inf)", (('options', ('auto',)), ('interval', 'int', 1, None, 'left'))),
        'beta_1': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
        'beta_2': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
        'early_stopping': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'epsilon': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'hidden_layer_sizes': ('an array-like or an int in the range [1, inf)', (('array-like',), ('interval', 'int', 1, None, 'left'))),
        'learning_rate': ("a str among {'adaptive', 'constant', 'invscaling'}", (('options', ('adaptive', 'constant', 'invscaling')),)),
        'learning_rate_init': ('a float in the range (0.0, inf)', (('interval', 'real', 0, None, 'neither'),)),
        'loss': ("a str among {'poisson', 'squared_error'}", (('options', ('poisson', 'squared_error')),)),
        'max_fun': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'max_iter': ('an int in the range [1, inf)', (('interval', 'int', 1, None, 'left'),)),
        'momentum': ('a float in the range [0.0, 1.0]', (('interval', 'real', 0, 1, 'both'),)),
        'n_iter_no_change': ('an int in the range [1, inf) or a float among {inf}', (('interval', 'int', 1, None, 'left'), ('never',))),
        'nesterovs_momentum': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'power_t': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'random_state': ("an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None", (('random_state',),)),
        'shuffle': ("an instance of 'bool' or an instance of 'numpy.bool'", (('boolean',),)),
        'solver': ("a str among {'adam', 'lbfgs', 'sgd'}", (('options', ('adam', 'lbfgs', 'sgd')),)),
        'tol': ('a float in the range [0.0, inf)', (('interval', 'real', 0, None, 'left'),)),
        'validation_fraction': ('a float in the range [0.0, 1.0)', (('interval', 'real', 0, 1, 'left'),)),
    },
}
# END GENERATED


def _met(constraint: tuple[Any, ...], value: Any) -> bool:
    kind = constraint[0]
    if kind == "interval":
        _, number, left, right, closed = constraint
        if number == "int" and not isinstance(value, int):
            return False
        if number == "real" and not isinstance(value, (int, float)):
            return False
        if number == "real_not_int" and (isinstance(value, int) or not isinstance(value, float)):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        low = -math.inf if left is None else left
        high = math.inf if right is None else right
        if value < low or (value == low and closed in ("right", "neither")):
            return False
        return not (value > high or (value == high and closed in ("left", "neither")))
    if kind == "options":
        # scikit-learn's StrOptions/Options: the option's type first, so True is not the option 1.
        return any(type(value) is type(option) and value == option for option in constraint[1])
    if kind == "none":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "random_state":
        return value is None or (isinstance(value, int) and 0 <= value <= 2**32 - 1)
    if kind == "verbose":
        return isinstance(value, int) and value >= 0
    if kind == "array-like":
        return isinstance(value, (list, dict))
    if kind == "instance":
        return {"dict": isinstance(value, dict), "list": isinstance(value, list), "str": isinstance(value, str),
                "int": isinstance(value, int), "real": isinstance(value, (int, float))}[constraint[1]]
    return False


def parameter_error(name: str, params: dict[str, Any] | None, where: str = "spec.estimator.params") -> str | None:
    """The refusal of the first parameter `name` does not take or whose value it refuses, starting with its field
    path under `where` as the API server's refusals do; None if all are fine."""
    if name not in ESTIMATOR_PARAMS:
        return f"estimator {name!r} is not in the allow-list"
    for param, value in (params or {}).items():
        if param in MANAGED:
            return f"{where}.{param}: parameter {param!r} is managed by mloop and cannot be set"
        if param not in ESTIMATOR_PARAMS[name]:
            return (f"{where}.{param}: {name} has no parameter {param!r}; "
                    f"it takes: {', '.join(sorted(ESTIMATOR_PARAMS[name]))}")
        rule = CONSTRAINTS[name].get(param)
        if rule is not None and not any(_met(c, value) for c in rule[1]):
            return f"{where}.{param}: The {param!r} parameter of {name} must be {rule[0]}. Got {value!r} instead."
    return None


def search_error(name: str, space: dict[str, list[Any]] | None, base: dict[str, Any] | None) -> str | None:
    """Every candidate value of a search, checked like a parameter."""
    for param, values in (space or {}).items():
        for value in values:
            error = parameter_error(name, {**(base or {}), param: value}, where="spec.search.parameters")
            if error:
                return error
    return None


# -- generation from the installed scikit-learn (not used at run time) ---------------------------------------------

def _encode(constraint: Any) -> tuple[Any, ...]:
    from numbers import Integral, Real

    from sklearn.utils import _param_validation as v

    made = v.make_constraint(constraint)
    if isinstance(made, v.Hidden):
        made = v.make_constraint(made.constraint)
    if isinstance(made, v.Interval):
        number = "int" if made.type is Integral else "real" if made.type is Real else "real_not_int"
        return ("interval", number, made.left, made.right, made.closed)
    if isinstance(made, v.Options):  # StrOptions too; values JSON cannot carry (inf) are dropped
        values = sorted((o for o in made.options if not (isinstance(o, float) and not math.isfinite(o))), key=repr)
        return ("options", tuple(values)) if values else ("never",)
    simple = {v._NoneConstraint: "none", v._Booleans: "boolean", v._RandomStates: "random_state",
              v._VerboseHelper: "verbose", v._ArrayLikes: "array-like"}
    if type(made) in simple:
        return (simple[type(made)],)
    if isinstance(made, v._InstancesOf):
        instance = {dict: "dict", list: "list", str: "str", Integral: "int", Real: "real", int: "int",
                    float: "real"}.get(made.type)
        return ("instance", instance) if instance else ("never",)
    if isinstance(made, (v._Callables, v.HasMethods)):
        return ("never",)
    raise TypeError(f"no JSON reading of scikit-learn constraint {made!r}: teach mloop.api.param_values")


def _shown(constraint: Any) -> str:
    """scikit-learn's own words for a constraint, with the options of a set in sorted order (a set's order depends
    on the process's hash seed)."""
    import copy

    from sklearn.utils._param_validation import Options

    if isinstance(constraint, Options):
        constraint = copy.copy(constraint)
        constraint.options = dict.fromkeys(sorted(constraint.options, key=repr))
    return str(constraint)


def generate() -> dict[str, dict[str, tuple[str, tuple[tuple[Any, ...], ...]]]]:
    from mloop.training.estimators import estimator_class

    out: dict[str, dict[str, tuple[str, tuple[tuple[Any, ...], ...]]]] = {}
    for name, params in ESTIMATOR_PARAMS.items():
        constraints = estimator_class(name)._parameter_constraints
        out[name] = {}
        for param in params:
            if param not in constraints or constraints[param] == "no_validation":
                continue
            from sklearn.utils._param_validation import make_constraint

            shown = [_shown(c) for c in map(make_constraint, constraints[param]) if not c.hidden]
            text = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
            out[name][param] = (text, tuple(_encode(c) for c in constraints[param]))
    return out


def _write() -> None:
    path = Path(__file__)
    text = path.read_text()
    head, rest = text.split("# BEGIN GENERATED\n")
    _, tail = rest.split("# END GENERATED\n")
    lines = ["CONSTRAINTS: dict[str, dict[str, tuple[str, tuple[tuple[Any, ...], ...]]]] = {"]
    for name, params in generate().items():
        lines.append(f"    {name!r}: {{")
        lines += [f"        {param!r}: {rule!r}," for param, rule in params.items()]
        lines.append("    },")
    block = "\n".join(lines) + "\n}\n"
    path.write_text(f"{head}# BEGIN GENERATED\n{block}# END GENERATED\n{tail}")


if __name__ == "__main__":
    _write()
    sys.exit(0)
