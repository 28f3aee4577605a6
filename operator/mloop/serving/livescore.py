"""Live scoring: a shadowing candidate and the Production package on the same labelled live rows.

Both servers collect their predictions under the caller's row ids (the Production server forwards the request id
to the shadow); feedback labels join them by row id. Only rows that both models answered and that have a label
count, so the two values are comparable. Metrics are computed with numpy: the operator loads no scikit-learn.
The join is kept in the bucket (storage/layout.live_rows) with the names of the objects it was read from, so
each pass reads only the batches written since the last one.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from mloop.storage.artifacts import Store, missing
from mloop.storage.layout import collected_prefix, feedback_prefix, live_rows

LIVE_METRICS = {"classification": ("accuracy", "balanced_accuracy", "f1_macro"), "regression": ("r2", "rmse", "mae")}
READ = ("label", "prediction", "prediction")  # the column each slot takes: feedback, Production's, the candidate's


class Joined:
    """Row id -> [label, Production's prediction, the candidate's] (JSON text, None while missing), and the
    objects already read into it. Stored in the bucket between passes, so a pass reads only objects it has not
    seen: collection and feedback batches are write-once, so what was read stays true."""

    def __init__(self, rows: dict[str, list[str | None]] | None = None, keys: set[str] | None = None):
        self.rows, self.keys = rows or {}, keys or set()

    @classmethod
    def load(cls, store: Store, key: str) -> Joined:
        raw = _get_or_none(store, key)
        if raw is None:
            return cls()
        table = pq.read_table(io.BytesIO(raw))
        keys = set(json.loads((table.schema.metadata or {}).get(b"mloop.keys", b"[]")))
        columns = [table.column(n).to_pylist() for n in ("row_id", "label", "production", "candidate")]
        return cls({r: [lab, prod, cand] for r, lab, prod, cand in zip(*columns)}, keys)

    def save(self, store: Store, key: str) -> None:
        ids = list(self.rows)
        table = pa.table({"row_id": pa.array(ids, pa.string()),
                          **{name: pa.array([self.rows[i][slot] for i in ids], pa.string())
                             for slot, name in enumerate(("label", "production", "candidate"))}})
        table = table.replace_schema_metadata({b"mloop.keys": json.dumps(sorted(self.keys)).encode()})
        out = io.BytesIO()
        pq.write_table(table, out, compression="zstd")
        store.put(key, out.getvalue(), overwrite=True)

    def add(self, store: Store, slot: int, prefix: str) -> bool:
        """Read the batches under `prefix` not read before into column `slot`; the later object wins a row id."""
        column = READ[slot]
        new = sorted(k for k in store.list_keys(prefix) if k.endswith(".parquet") and k not in self.keys)
        for key in new:
            table = pq.read_table(io.BytesIO(store.get(key)), columns=["row_id", column])
            for row_id, value in zip(table.column("row_id").to_pylist(), table.column(column).to_pylist()):
                self.rows.setdefault(row_id, [None, None, None])[slot] = value
            self.keys.add(key)
        return bool(new)

    def complete(self) -> tuple[list[Any], list[Any], list[Any]]:
        """(labels, Production's predictions, the candidate's) on the rows all three have, in row-id order."""
        ids = sorted(i for i, r in self.rows.items() if None not in r)
        return tuple([json.loads(self.rows[i][slot]) for i in ids] for slot in range(3))  # type: ignore[return-value]


def _get_or_none(store: Store, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ClientError as err:
        if missing(err):
            return None
        raise


def joined(store: Store, namespace: str, model: str, production_version: int,
           candidate_version: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(labels, Production's predictions, the candidate's) on the rows all three have, in row-id order; the
    objects read in earlier passes are not read again."""
    key = live_rows(namespace, model, candidate_version, production_version)
    state = Joined.load(store, key)
    changed = False
    for slot, prefix in enumerate((feedback_prefix(namespace, model), collected_prefix(namespace, model, production_version),
                                   collected_prefix(namespace, model, candidate_version))):
        changed |= state.add(store, slot, prefix)
    if changed:
        state.save(store, key)
    return state.complete()


def metric_value(metric: str, y: list[Any], predicted: list[Any]) -> float:
    """One metric on live rows; classification labels are compared as strings (JSON may carry 1 or "1")."""
    if metric in LIVE_METRICS["regression"]:
        t, p = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)
        if metric == "rmse":
            return float(np.sqrt(np.mean((t - p) ** 2)))
        if metric == "mae":
            return float(np.mean(np.abs(t - p)))
        total = float(np.sum((t - t.mean()) ** 2))
        return float(1 - np.sum((t - p) ** 2) / total) if total else 0.0
    if metric not in LIVE_METRICS["classification"]:
        raise ValueError(f"metric {metric} is not computed on live rows; use one of "
                         f"{', '.join(LIVE_METRICS['classification'] + LIVE_METRICS['regression'])}")
    t, p = np.asarray([str(v) for v in y]), np.asarray([str(v) for v in predicted])
    if metric == "accuracy":
        return float(np.mean(t == p))
    classes = sorted(set(t.tolist()) | (set(p.tolist()) if metric == "f1_macro" else set()))
    recalls, f1s = [], []
    for c in classes:
        tp = float(np.sum((t == c) & (p == c)))
        actual, guessed = float(np.sum(t == c)), float(np.sum(p == c))
        recalls.append(tp / actual if actual else 0.0)
        f1s.append(2 * tp / (actual + guessed) if actual + guessed else 0.0)
    return float(np.mean(recalls if metric == "balanced_accuracy" else f1s)) if classes else 0.0


def score(store: Store, namespace: str, model: str, production_version: int, candidate_version: int,
          metric: str) -> tuple[int, float | None, float | None]:
    """(rows, Production's value, the candidate's value); values are None while there is no row."""
    y, production, candidate = joined(store, namespace, model, production_version, candidate_version)
    if not y:
        return 0, None, None
    return len(y), metric_value(metric, y, production), metric_value(metric, y, candidate)
