"""Facts about metrics that decisions need without loading scikit-learn."""

PRIMARY = {"classification": "accuracy", "regression": "r2"}
# Lower is better for these; everything else is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
