"""Facts about metrics that decisions need without loading scikit-learn."""

PRIMARY = {"classification": "accuracy", "regression": "r2"}
# Lower is better for these; everything else is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
# Fractions: a threshold outside [0, 1] can never be met (min: 90 meant 90%).
UNIT_INTERVAL = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "recall", "precision", "f1", "recall_macro",
                 "precision_macro", "positive_rate")
