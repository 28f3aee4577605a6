"""scikit-learn pieces shared by the operator (checks before any Job) and the trainer (the fit itself)."""
