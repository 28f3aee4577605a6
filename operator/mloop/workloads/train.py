"""The trainer: one search trial (an index of an Indexed Job), or the final fit with its full record.

    python -m mloop.workloads.train trial <run prefix>    (reads JOB_COMPLETION_INDEX)
    python -m mloop.workloads.train fit <run prefix>
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate, train_test_split

from mloop.api.common import CheckMeasurement
from mloop.api.tasks import BestTrial, TrainResult, TrainTaskSpec, TrialTaskResult
from mloop.api.trainingrun import TrainingRunSpec
from mloop.data.tables import read_version
from mloop.storage.artifacts import AlreadyExists, Store, sha256_hex
from mloop.storage.layout import dataset_prefix
from mloop.training import checks
from mloop.training.estimators import ParameterError, make_estimator
from mloop.training.metrics import PRIMARY, cv_scorers, heldout
from mloop.training.numeric import numeric_environment, pinned_threads
from mloop.training.pipeline import build_pipeline
from mloop.training.search import candidates
from mloop.versions import package_versions
from mloop.workloads.task import run_task

class RunError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def load_xy(job: TrainTaskSpec, store: Store) -> tuple[pd.DataFrame, pd.Series]:
    x, y, _ = load_table(job, store)
    return x, y


def load_table(job: TrainTaskSpec, store: Store) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Features, target, and the other columns of the same rows (slicing columns need not be features)."""
    ds = job.dataset
    frame = read_version(store, dataset_prefix(ds.namespace, ds.name, ds.digest))
    target, features = job.target, job.features
    if target not in frame.columns:
        raise RunError("TargetNotFound", f"target {target!r} is not a column of {ds.name}@{ds.version}")
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise RunError("FeatureNotFound", f"feature {missing[0]!r} is not a column of {ds.name}@{ds.version}")
    if not features:
        raise RunError("NoFeatures", "the feature set is empty")
    x = frame[features].copy()
    for column in features:
        if job.types.get(column) not in ("integer", "float", "boolean"):
            x[column] = x[column].astype(object).where(x[column].notna(), np.nan)
    y = frame[target]
    side = frame[[c for c in frame.columns if c not in features and c != target]]
    if y.isna().any():
        keep = y.notna().to_numpy()
        x, y, side = x[keep], y[keep], side[keep]
    if job.task == "classification":
        y = y.astype(str) if y.dtype.kind not in "iub" else y
    return x.reset_index(drop=True), y.reset_index(drop=True), side.reset_index(drop=True)


def split(task: TrainTaskSpec, spec: TrainingRunSpec, x: pd.DataFrame, y: pd.Series):
    sp = spec.split
    test_fraction, seed, stratify = (sp.test_fraction, sp.seed, sp.stratify) if sp else (0.2, 42, True)
    strat = y if task.task == "classification" and stratify else None
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)


def folds(task: TrainTaskSpec, spec: TrainingRunSpec, y_train: pd.Series):
    """The CV splitter; on small data, no more folds than the rarest class has rows (at least 2)."""
    n = spec.cv.folds if spec.cv else 5
    seed = spec.split.seed if spec.split else 42
    if task.task == "classification":
        n = max(2, min(n, int(y_train.value_counts().min())))
        return StratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
    return KFold(n_splits=max(2, min(n, len(y_train))), shuffle=True, random_state=seed)


def seed_of(spec: TrainingRunSpec) -> int:
    return spec.split.seed if spec.split else 42


def scoring_of(task: TrainTaskSpec, spec: TrainingRunSpec) -> tuple[str, str]:
    """(metric name, sklearn scorer) that ranks search trials."""
    name = (spec.search.scoring if spec.search and spec.search.scoring else PRIMARY[task.task])
    return name, cv_scorers(task.task).get(name, name)


def trial(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    task = TrainTaskSpec.model_validate(raw)
    spec = task.spec
    assert spec.search is not None
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    params = candidates(spec.search, seed_of(spec))[index]
    x, y = load_xy(task, store)
    x_train, _, y_train, _ = split(task, spec, x, y)
    model = build_pipeline(make_estimator(spec.estimator.name, {**(spec.estimator.params or {}), **params}, seed_of(spec)),
                           task.features, task.types, spec.preprocessing)
    name, scorer = scoring_of(task, spec)
    started = time.perf_counter()
    scores = cross_validate(model, x_train, y_train, cv=folds(task, spec, y_train), scoring=scorer)["test_score"]
    log.info("trial %d %s: %s %.4f", index, params, name, scores.mean())
    return TrialTaskResult(status="Succeeded", index=index, params=params, score=float(scores.mean()),
                           std=float(scores.std()), seconds=time.perf_counter() - started).to_wire()


def best_trial(prefix: str, store: Store, count: int) -> tuple[TrialTaskResult, pd.DataFrame]:
    rows = []
    for index in range(count):
        raw = store.get_json_or_none(f"{prefix}trials/{index}.json")
        result = TrialTaskResult.model_validate(raw) if raw is not None else None
        if result is None or result.status != "Succeeded":
            raise RunError("TrialFailed", f"search trial {index} has no result: "
                                          f"{result.message if result else 'it did not finish'}")
        rows.append(result)
    best = max(rows, key=lambda r: (r.score, -r.index))
    table = pd.DataFrame([{"index": r.index, "score": r.score, "std": r.std, "seconds": r.seconds,
                           **{f"param_{k}": json.dumps(v) for k, v in r.params.items()}} for r in rows])
    return best, table


def put_immutable(store: Store, key: str, data: bytes) -> str:
    """runs/ is never overwritten. A retried task keeps what an earlier attempt of the same run wrote:
    the computation is seeded, so it is equivalent (skops names arrays by object id, so bytes differ)."""
    try:
        return store.put(key, data)
    except AlreadyExists:
        return sha256_hex(store.get(key))


def fit(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    import skops.io as sio

    task = TrainTaskSpec.model_validate(raw)
    spec, prefix = task.spec, task.prefix
    try:
        x, y, side = load_table(task, store)
        params = dict(spec.estimator.params or {})
        best = None
        if spec.search is not None:
            best, trials = best_trial(prefix, store, len(candidates(spec.search, seed_of(spec))))
            params.update(best.params)
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), sink)
            put_immutable(store, prefix + "trials.parquet", sink.getvalue().to_pybytes())
            log.info("best of %d trials: %s (score %.4f)", len(trials), best.params, best.score)
        model = build_pipeline(make_estimator(spec.estimator.name, params, seed_of(spec)), task.features,
                               task.types, spec.preprocessing)
    except ParameterError as err:
        return TrainResult(status="Failed", reason="InvalidParameter", message=str(err)[:1000]).to_wire()
    except RunError as err:
        return TrainResult(status="Failed", reason=err.reason, message=err.message).to_wire()

    x_train, x_test, y_train, y_test = split(task, spec, x, y)
    splitter = folds(task, spec, y_train)
    try:
        cv = cross_validate(model, x_train, y_train, cv=splitter, scoring=cv_scorers(task.task), error_score="raise")
        started = time.perf_counter()
        model.fit(x_train, y_train)
    except (ValueError, TypeError) as err:
        return TrainResult(status="Failed", reason="FitFailed",
                           message=f"{type(err).__name__}: {str(err)[:800]}").to_wire()
    fit_seconds = time.perf_counter() - started
    values, extras = heldout(task.task, model, x_test, y_test)
    for name in cv_scorers(task.task):
        scores = cv[f"test_{name}"]
        sign = -1.0 if name in ("rmse", "mae") else 1.0  # sklearn negates losses so that greater is better
        values[f"cv_{name}_mean"] = float(sign * scores.mean())
        values[f"cv_{name}_std"] = float(scores.std())
    measured = measure_checks(task, store, model, x, side, x_test, y_test, log)
    blob = sio.dumps(model)
    model_digest = put_immutable(store, prefix + "model.skops", blob)
    values["fit_seconds"] = round(fit_seconds, 4)
    values["model_size_mb"] = round(len(blob) / 1e6, 4)
    record = {
        "task": task.task, "metrics": values, **extras, "features": task.features, "target": task.target,
        "rows": {"train": int(len(x_train)), "test": int(len(x_test))},
        "dataset": task.dataset.to_wire(), "seeds": {"split": seed_of(spec), "estimator": seed_of(spec)},
        "cv_folds": splitter.get_n_splits(),
        "params": params, "packages": package_versions(),
        "numericEnvironment": numeric_environment(),  # decides the last bits of every metric
        "checks": [m.to_wire() for m in measured],
    }
    put_immutable(store, prefix + "metrics.json", json.dumps(record, indent=2, sort_keys=True, default=str).encode())
    primary = PRIMARY[task.task]
    log.info("held-out %s %.4f; model %s (%d bytes)", primary, values[primary], model_digest[:12], len(blob))
    return TrainResult(
        status="Succeeded", reason="Trained", message=f"held-out {primary} {values[primary]:.4f}",
        task=task.task, features=task.features, metrics=values, model_uri=store.uri(prefix + "model.skops"),
        model_digest=f"sha256:{model_digest}",
        best_trial=best and BestTrial(index=best.index, params=best.params, score=best.score),
        trials=len(candidates(spec.search, seed_of(spec))) if spec.search else None,
        packages=record["packages"],
        numeric_environment=record["numericEnvironment"],
        checks=measured,
    ).to_wire()


def measure_checks(task: TrainTaskSpec, store: Store, model: Any, x: pd.DataFrame, side: pd.DataFrame,
                   x_test: pd.DataFrame, y_test: pd.Series, log: logging.Logger) -> list[CheckMeasurement]:
    """The slice metrics and behavioural tests the run's requirements asked for, on the held-out rows."""
    if task.checks is None:
        return []
    out = []
    predicted = np.asarray(model.predict(x_test)) if task.checks.slices else np.array([])
    labels = sorted(model.classes_.tolist()) if task.task == "classification" else []
    for check in task.checks.slices:
        column = (x_test[check.column] if check.column in x.columns
                  else side.loc[x_test.index, check.column] if check.column in side.columns else None)
        out.append(checks.measure_slices(task.task, check, column, y_test, predicted, labels))
    for test in task.checks.tests:
        table = None
        functionality = (test.test.get("minimumFunctionality") or {})
        if functionality.get("rows"):
            table = pd.DataFrame(functionality["rows"])
        elif test.dataset is not None:
            pin = test.dataset
            table = read_version(store, dataset_prefix(pin.namespace, pin.name, pin.digest))
        out.append(checks.behaviour(task.task, test, model, x_test, task.types, task.features, task.target, table))
    for m in out:
        log.info("check %s: %s", m.key, m.message or (m.value if m.value is not None else f"{len(m.slices or [])} slices"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] not in ("trial", "fit"):
        print("usage: python -m mloop.workloads.train trial|fit <run prefix>", file=sys.stderr)
        return 2
    mode, prefix = args
    with pinned_threads():  # trial scores and metrics must not depend on the node's core count
        if mode == "trial":
            index = os.environ.get("JOB_COMPLETION_INDEX", "0")
            return run_task("trial", prefix, trial, result_key=f"trials/{index}.json", log_key=f"trials/{index}.log")
        return run_task("train", prefix, fit)


if __name__ == "__main__":
    sys.exit(main())
