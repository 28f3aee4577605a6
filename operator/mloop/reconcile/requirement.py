"""Requirement status from what references it: trace, the best candidate, the production model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mloop.api.common import CheckMeasurement, Condition, set_condition
from mloop.api.dataset import DatasetStatus
from mloop.api.requirement import RequirementSpec
from mloop.reconcile.outcome import Event, Outcome, dump_conditions
from mloop.reconcile.requirements import evaluate, primary_metric, verdict
from mloop.api.metrics import LOWER_IS_BETTER


def _evaluation(name: str, spec: RequirementSpec, subject: str, metrics: dict[str, float] | None,
                dataset: DatasetStatus | None, now: datetime, checks: list[Any] | None = None) -> dict[str, Any]:
    results = evaluate(name, spec, metrics, dataset, None, now,
                       checks=[CheckMeasurement.model_validate(c) for c in checks or []])
    met, _ = verdict(results)
    return {"subject": subject, "satisfied": met, "results": [r.to_wire() for r in results][:64]}


def requirement_status(name: str, spec: RequirementSpec, runs: list[dict[str, Any]], packages: list[dict[str, Any]],
                       datasets: list[dict[str, Any]], run_lookup: dict[str, dict[str, Any]],
                       dataset_lookup: dict[str, DatasetStatus], conditions: list[Condition], generation: int,
                       now: datetime) -> Outcome:
    """Pure: the indexes' entries in, the Requirement's status out."""
    trace = sorted([*({"kind": "Dataset", **d} for d in datasets), *({"kind": "TrainingRun", **r} for r in runs),
                    *({"kind": "ModelPackage", **p} for p in packages)], key=lambda t: (t["kind"], t["name"]))
    trace_wire = [{k: t[k] for k in ("kind", "name", "namespace", "phase") if t.get(k) is not None} for t in trace][:200]
    task = "regression" if any("r2" in (r.get("metrics") or {}) for r in runs) else "classification"
    primary = primary_metric([spec], task)
    succeeded = [r for r in runs if r.get("phase") == "Succeeded" and primary in (r.get("metrics") or {})]
    status: dict[str, Any] = {"observedGeneration": generation, "trace": trace_wire, "candidate": None, "production": None}
    if succeeded:
        sign = -1 if primary in LOWER_IS_BETTER else 1
        best = max(succeeded, key=lambda r: (sign * r["metrics"][primary], r["name"]))
        status["candidate"] = _evaluation(name, spec, f"trainingrun/{best['name']}", best["metrics"],
                                          dataset_lookup.get(best.get("dataset") or ""), now, best.get("checks"))
    production = next((p for p in packages if p.get("stage") == "Production"), None)
    if production is not None:
        run = run_lookup.get(production.get("run") or "", {})
        status["production"] = _evaluation(name, spec, f"modelpackage/{production['name']}", run.get("metrics"),
                                           dataset_lookup.get(run.get("dataset") or ""), now, run.get("checks"))
    if status["production"] is not None:
        ok = status["production"]["satisfied"]
        cond = ("True", "ProductionMeetsCriteria", f"{status['production']['subject']} meets every criterion") if ok else (
            "False", "ProductionFailsCriteria", f"{status['production']['subject']} fails a criterion")
        status["phase"] = "Satisfied" if ok else "Unsatisfied"
    elif status["candidate"] is not None:
        best_ok = status["candidate"]["satisfied"]
        cond = ("False", "NoProductionModel", f"no package is in Production; best candidate "
                f"{status['candidate']['subject']} {'meets' if best_ok else 'fails'} the criteria")
        status["phase"] = "Unsatisfied"
    else:
        cond = ("Unknown", "NoCandidate", "no succeeded TrainingRun references this requirement yet")
        status["phase"] = "Pending"
    before = list(conditions)
    after = set_condition(before, "Satisfied", cond[0], cond[1], cond[2], generation, now)
    after = set_condition(after, "Ready", "True", "Evaluated", f"{len(trace_wire)} objects traced", generation, now)
    status["conditions"] = dump_conditions(after)
    old = next((c for c in before if c.type == "Satisfied"), None)
    events = [] if old is not None and (old.status, old.reason) == cond[:2] else [
        Event("Normal" if cond[0] == "True" else "Warning", cond[1], cond[2])]
    return Outcome(status, events)
