"""Held-out and cross-validation metrics, by task."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics

from mloop.api.metrics import LOWER_IS_BETTER, PRIMARY  # noqa: F401 - re-exported for the trainer

CLASSIFICATION_CV = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "f1_macro": "f1_macro"}
REGRESSION_CV = {"r2": "r2", "rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error"}


def cv_scorers(task: str) -> dict[str, str]:
    return CLASSIFICATION_CV if task == "classification" else REGRESSION_CV


def heldout(task: str, model: Any, x_test: Any, y_test: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Float metrics for status, plus extras (confusion matrix, labels) for metrics.json."""
    predicted = model.predict(x_test)
    if task == "regression":
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y_test, predicted))),
            "mae": float(metrics.mean_absolute_error(y_test, predicted)),
            "r2": float(metrics.r2_score(y_test, predicted)),
        }, {}
    labels = list(model.classes_)
    out = {
        "accuracy": float(metrics.accuracy_score(y_test, predicted)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_test, predicted)),
        "f1_macro": float(metrics.f1_score(y_test, predicted, average="macro")),
    }
    if hasattr(model, "predict_proba"):
        try:
            proba = model.predict_proba(x_test)
            out["log_loss"] = float(metrics.log_loss(y_test, proba, labels=labels))
            out["roc_auc"] = float(metrics.roc_auc_score(y_test, proba[:, 1]) if len(labels) == 2 else
                                   metrics.roc_auc_score(y_test, proba, multi_class="ovr", labels=labels))
        except (ValueError, AttributeError):
            pass  # e.g. a class missing from the held-out rows: the metric is undefined, not zero
    elif hasattr(model, "decision_function") and len(labels) == 2:
        out["roc_auc"] = float(metrics.roc_auc_score(y_test, model.decision_function(x_test)))
    extras = {"labels": [str(label) for label in labels],
              "confusion_matrix": metrics.confusion_matrix(y_test, predicted, labels=labels).tolist()}
    return out, extras
