"""The candidates of a hyper-parameter search, computed the same way by the operator and every trial."""

from __future__ import annotations

from typing import Any

from sklearn.model_selection import ParameterGrid, ParameterSampler

from mloop.api.trainingrun import SearchSpec


def candidates(search: SearchSpec, seed: int) -> list[dict[str, Any]]:
    space = {name: list(values) for name, values in search.parameters.items()}
    if search.type == "grid":
        grid = list(ParameterGrid(space))
        return grid[: search.trials] if search.trials else grid
    return list(ParameterSampler(space, n_iter=search.trials or 10, random_state=seed))
