"""Slice criteria and behavioural tests in tables: what the judge makes of measurements, and what the trainer
measures on real scikit-learn models (no S3 needed for either)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mloop.api.common import CheckMeasurement, SliceResult
from mloop.api.dataset import DatasetStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import BehaviourCheck, SliceCheck, TrainResult
from mloop.reconcile import promotion
from mloop.reconcile.requirements import checks_for, evaluate, slice_key, behaviour_key, verdict
from mloop.reconcile.trainingrun import _covers, plan_checks
from mloop.training import checks as trainer


def _req(metric: dict | None = None, tests: list | None = None) -> RequirementSpec:
    body: dict = {"title": "t"}
    if metric is not None:
        body["metrics"] = [metric]
    if tests is not None:
        body["tests"] = tests
    return RequirementSpec.model_validate(body)


def _sliced(*slices: tuple[str, int, float | None]) -> list[SliceResult]:
    return [SliceResult(slice=s, rows=n, value=v) for s, n, v in slices]


REGIONS = _sliced(("region=east", 50, 0.95), ("region=north", 40, 0.91), ("region=south", 45, 0.62),
                  ("region=west", 5, 0.2))


@pytest.mark.parametrize("criterion,slices,expected", [
    # every slice with enough rows meets the bound; west (5 rows) is listed but not judged
    ({"metric": "accuracy", "min": 0.6, "slice": {"column": "region", "minRows": 30}}, REGIONS,
     [("slice:accuracy:region", True, "region=south", 0.62)]),
    # one slice fails: the result names it
    ({"metric": "accuracy", "min": 0.8, "slice": {"column": "region", "minRows": 30}}, REGIONS,
     [("slice:accuracy:region", False, "region=south", 0.62)]),
    # a lower minRows brings west in, and it is now the worst
    ({"metric": "accuracy", "min": 0.6, "slice": {"column": "region", "minRows": 5}}, REGIONS,
     [("slice:accuracy:region", False, "region=west", 0.2)]),
    # the gap alone: 0.95 - 0.62 = 0.33
    ({"metric": "accuracy", "slice": {"column": "region", "minRows": 30, "maxGap": 0.4}}, REGIONS,
     [("slice-gap:accuracy:region", True, "region=south", 0.33)]),
    ({"metric": "accuracy", "min": 0.5, "slice": {"column": "region", "minRows": 30, "maxGap": 0.1}}, REGIONS,
     [("slice:accuracy:region", True, "region=south", 0.62), ("slice-gap:accuracy:region", False, "region=south", 0.33)]),
    # lower is better: max bounds the highest error; the worst slice of the gap is the highest
    ({"metric": "rmse", "max": 10, "slice": {"column": "age", "bins": [40], "minRows": 10, "maxGap": 3}},
     _sliced(("age<40", 20, 4.0), ("age>=40", 30, 11.0)),
     [("slice:rmse:age", False, "age>=40", 11.0), ("slice-gap:rmse:age", False, "age>=40", 7.0)]),
    # undefined values are not judged
    ({"metric": "r2", "min": 0.1, "slice": {"column": "g", "minRows": 1}}, _sliced(("g=a", 1, None), ("g=b", 9, 0.4)),
     [("slice:r2:g", True, "g=b", 0.4)]),
    # nothing to judge is a failure, not a vacuous pass
    ({"metric": "accuracy", "min": 0.6, "slice": {"column": "region", "minRows": 100}}, REGIONS,
     [("slice:accuracy:region", False, None, None)]),
])
def test_slice_criterion(criterion, slices, expected) -> None:
    spec = _req(criterion)
    measured = [CheckMeasurement(key=slice_key(spec.metrics[0]), rows=140, slices=slices)]
    results = evaluate("r", spec, {"accuracy": 0.9}, checks=measured)
    assert [(r.criterion, r.passed, r.worst, r.value) for r in results] == expected
    for r in results:
        assert len(r.slices or []) == len(slices)  # every slice is shown, judged or not
        if r.worst:
            assert r.worst in r.message


def test_failed_slice_is_named_by_the_verdict_and_the_gate() -> None:
    spec = _req({"metric": "accuracy", "min": 0.8, "slice": {"column": "region", "minRows": 30}})
    results = evaluate("fair", spec, {}, checks=[CheckMeasurement(key=slice_key(spec.metrics[0]), slices=REGIONS)])
    met, why = verdict(results)
    assert not met and "region=south" in why
    gate = promotion.decide("Production", 2, results, [], None)
    assert gate.stage == "None" and gate.reason == "CriterionFailed"
    assert "fair/slice:accuracy:region" in gate.message and "region=south: 0.62 < 0.8" in gate.message
    south = next(s for s in results[0].slices if s.slice == "region=south")
    west = next(s for s in results[0].slices if s.slice == "region=west")
    assert south.passed is False and west.passed is None


@pytest.mark.parametrize("measured,why", [
    (None, "not measured"),  # the run was not given the check
    (CheckMeasurement(key="", error=True, message="slicing column 'region' is not a column of the training data"),
     "not a column"),
])
def test_unmeasured_slice_criterion_refuses(measured, why) -> None:
    spec = _req({"metric": "accuracy", "min": 0.8, "slice": {"column": "region"}})
    checks = [measured.model_copy(update={"key": slice_key(spec.metrics[0])})] if measured else []
    [result] = evaluate("r", spec, {"accuracy": 0.99}, checks=checks)
    assert result.passed is False and why in result.message


INVARIANCE = {"name": "ignores-sex", "invariance": {"column": "sex", "maxChangedFraction": 0.02}}
DIRECTIONAL = {"name": "income-up", "directional": {"column": "income", "direction": "increasing"}}
FUNCTIONALITY = {"name": "known-cases", "minimumFunctionality": {"rows": [{"x": 1, "y": "a"}], "minAccuracy": 0.9}}


@pytest.mark.parametrize("test,value,passed,text", [
    (INVARIANCE, 0.01, True, "1.00% of 200 predictions changed with only sex changed (swap) (<= 0.02)"),
    (INVARIANCE, 0.05, False, "5.00% of 200 predictions changed with only sex changed (swap) (> 0.02); held-out row 7"),
    (DIRECTIONAL, 0.0, True, "raising income lowered the score on 0.00% of 200 rows (<= 0)"),
    (DIRECTIONAL, 0.1, False, "raising income lowered the score on 10.00% of 200 rows (> 0)"),
    (FUNCTIONALITY, 0.95, True, "95.00% of 200 rows predicted right (>= 0.9)"),
    (FUNCTIONALITY, 0.5, False, "50.00% of 200 rows predicted right (< 0.9)"),
])
def test_behavioural_test_is_a_criterion(test, value, passed, text) -> None:
    spec = _req(tests=[test])
    key = behaviour_key(spec.tests[0])
    [result] = evaluate("r", spec, {}, checks=[CheckMeasurement(key=key, value=value, rows=200,
                                                                 message="held-out row 7: ...")])
    assert result.criterion == f"test:{test['name']}" and result.passed is passed
    assert result.message.startswith(text)


def test_a_threshold_edit_is_rejudged_but_a_definition_edit_needs_a_new_run() -> None:
    before = _req(tests=[INVARIANCE])
    looser = _req(tests=[{**INVARIANCE, "invariance": {"column": "sex", "maxChangedFraction": 0.1}}])
    other = _req(tests=[{**INVARIANCE, "invariance": {"column": "age", "maxChangedFraction": 0.02}}])
    measured = [CheckMeasurement(key=behaviour_key(before.tests[0]), value=0.05, rows=100)]
    assert evaluate("r", before, {}, checks=measured)[0].passed is False
    assert evaluate("r", looser, {}, checks=measured)[0].passed is True
    assert evaluate("r", other, {}, checks=measured)[0].message.startswith("not measured")


def test_checks_are_planned_once_and_datasets_pinned() -> None:
    a = _req({"metric": "accuracy", "min": 0.8, "slice": {"column": "g"}},
             [{"name": "cases", "minimumFunctionality": {"datasetRef": {"name": "cases"}}}])
    b = _req({"metric": "accuracy", "min": 0.9, "slice": {"column": "g", "maxGap": 0.1}})
    slices, tests = checks_for([("a", a), ("b", b)])
    assert len(slices) == 1 and len(tests) == 1  # the same grouping is measured once for both
    waiting = plan_checks([("a", a)], "ns", {"ns/cases": None})
    assert waiting == "Dataset cases of behavioural test cases has no version yet"
    ready = DatasetStatus(phase="Ready", version="abcdefabcdef", digest="sha256:" + "ab" * 32)
    planned = plan_checks([("a", a), ("b", b)], "ns", {"ns/cases": ready})
    assert planned.tests[0].dataset.version == "abcdefabcdef"
    assert not _covers(TrainResult(status="Succeeded"), planned)  # a cached result without them is not reused
    assert plan_checks([("c", _req({"metric": "accuracy", "min": 0.5}))], "ns", {}) is None


# -- what the trainer measures, on real models ------------------------------------------------------------------

def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"income": rng.normal(50, 10, n), "sex": rng.choice(["F", "M"], n),
                         "noise": rng.normal(0, 1, n)})


def test_trainer_slices_by_value_and_by_bins() -> None:
    y_true = pd.Series(["a", "a", "b", "b", "a", "b"])
    predicted = np.array(["a", "b", "b", "b", "a", "a"])
    by_group = trainer.measure_slices("classification", SliceCheck(key="k", metric="accuracy", column="g"),
                                      pd.Series(["x", "x", "x", "y", "y", "y"], name="g"), y_true, predicted, ["a", "b"])
    assert [(s.slice, s.rows, s.value) for s in by_group.slices] == [("g=x", 3, 0.666667), ("g=y", 3, 0.666667)]
    by_age = trainer.measure_slices("classification", SliceCheck(key="k", metric="recall", column="age", bins=[30, 60]),
                                    pd.Series([20, 25, 40, 50, 70, None], name="age"), y_true, predicted, ["a", "b"])
    assert [s.slice for s in by_age.slices] == ["age<30", "age=[30, 60)", "age=null", "age>=60"]
    assert by_age.slices[0].value is None  # no positive row under 30: recall is undefined there, not 0
    unknown = trainer.measure_slices("classification", SliceCheck(key="k", metric="r2", column="g"),
                                     pd.Series(["x"] * 6, name="g"), y_true, predicted, ["a", "b"])
    assert unknown.error and "cannot be computed per slice" in unknown.message


def test_trainer_invariance_catches_a_model_that_uses_the_column() -> None:
    frame = _frame()
    types = {"income": "float", "sex": "category"}
    features = ["income", "sex"]
    x = pd.get_dummies(frame[features], columns=["sex"], dtype=float)
    fair_y = (frame["income"] > 50).map({True: "yes", False: "no"})
    biased_y = ((frame["income"] > 50) & (frame["sex"] == "M")).map({True: "yes", False: "no"})
    from mloop.training.pipeline import build_pipeline
    test = {"name": "ignores-sex", "invariance": {"column": "sex"}}
    check = BehaviourCheck(key="k", test=test)
    for y, biased in ((fair_y, False), (biased_y, True)):
        model = build_pipeline(DecisionTreeClassifier(random_state=0), features, types, None).fit(frame[features], y)
        got = trainer.behaviour("classification", check, model, frame[features], types, features, "y", None)
        assert (got.value > 0.2) is biased, got
        assert ("changed the prediction" in got.message) is biased
    assert len(x) == len(frame)


def test_trainer_directional_and_minimum_functionality() -> None:
    frame = _frame()
    types = {"income": "float", "noise": "float"}
    features = ["income", "noise"]
    y = (frame["income"] > 50).astype(int)
    model = LogisticRegression().fit(frame[features], y)
    up = BehaviourCheck(key="k", test={"name": "up", "directional": {"column": "income", "direction": "increasing"}})
    down = BehaviourCheck(key="k", test={"name": "down", "directional": {"column": "income", "direction": "decreasing"}})
    assert trainer.behaviour("classification", up, model, frame[features], types, features, "y", None).value == 0.0
    assert trainer.behaviour("classification", down, model, frame[features], types, features, "y", None).value > 0.5  # saturated scores stay equal
    reg = LinearRegression().fit(frame[features], frame["income"] * -2)
    assert trainer.behaviour("regression", up, reg, frame[features], types, features, "y", None).value == 1.0
    rows = pd.DataFrame([{"income": 90, "noise": 0, "y": 1}, {"income": 10, "noise": 0, "y": 1}])
    mf = BehaviourCheck(key="k", test={"name": "mf", "minimumFunctionality": {"rows": rows.to_dict("records")}})
    got = trainer.behaviour("classification", mf, model, frame[features], types, features, "y", rows)
    assert got.value == 0.5 and got.message == "row 1: predicted 0, expected 1 (1 wrong)"
    typo = rows.rename(columns={"noise": "nosie"})
    bad = trainer.behaviour("classification", mf, model, frame[features], types, features, "y", typo)
    assert bad.error and "'nosie' is not a feature" in bad.message


# -- the run: checks written into spec.json at the start, judged at the finish ------------------------------------

def test_a_run_starts_with_its_checks_pinned_and_finishes_judging_them() -> None:
    from mloop.api.tasks import TaskState
    from mloop.api.trainingrun import TrainingRunStatus
    from mloop.reconcile.trainingrun import CacheEntry, WriteSpec, decide
    from tests.unit.test_trainingrun_decide import IN_FLIGHT, NOW, TRAINED, cond, spec, world

    fair = _req({"metric": "accuracy", "min": 0.8, "slice": {"column": "g", "minRows": 10}},
                [{"name": "cases", "minimumFunctionality": {"datasetRef": {"name": "cases"}}}])
    run = spec(requirementRefs=[{"name": "fair"}])
    waiting = decide(run, TrainingRunStatus(), world(requirements=(("fair", fair),)), NOW)
    assert not waiting.of(WriteSpec) and cond(waiting, "Succeeded")[1] == "WaitingForDataset"

    cases = DatasetStatus(phase="Ready", version="c" * 12, digest="sha256:" + "c" * 64)
    started = decide(run, TrainingRunStatus(), world(requirements=(("fair", fair),), test_datasets={"ns/cases": cases}),
                     NOW)
    [write] = started.of(WriteSpec)
    checks = write.body.to_wire()["checks"]
    assert checks["slices"] == [{"key": slice_key(fair.metrics[0]), "metric": "accuracy", "column": "g"}]
    assert checks["tests"][0]["dataset"] == {"namespace": "ns", "name": "cases", "version": "c" * 12,
                                             "digest": "c" * 64}

    measured = [CheckMeasurement(key=slice_key(fair.metrics[0]), slices=_sliced(("g=a", 20, 0.9), ("g=b", 20, 0.7))),
                CheckMeasurement(key=behaviour_key(fair.tests[0]), value=1.0, rows=3)]
    result = TRAINED.model_copy(update={"checks": measured})
    done = decide(run, TrainingRunStatus.model_validate(IN_FLIGHT),
                  world(task=TaskState("Succeeded", exit_code=0), result=result, requirements=(("fair", fair),)), NOW)
    assert [c["key"] for c in done.status["checks"]] == [m.key for m in measured]
    assert {r["criterion"]: (r["passed"], r.get("worst")) for r in done.status["requirements"]} == {
        "slice:accuracy:g": (False, "g=b"), "test:cases": (True, None)}
    assert cond(done, "RequirementsMet") == ("False", "CriterionFailed")

    # a cached result that measured none of it is not reused: the run trains
    hit = CacheEntry(run="older", uid="u-0", result=TRAINED)
    again = decide(spec(requirementRefs=[{"name": "fair"}], cachePolicy="reuse"), TrainingRunStatus(),
                   world(requirements=(("fair", fair),), test_datasets={"ns/cases": cases}, cache_hit=hit), NOW)
    assert again.of(WriteSpec) and cond(again, "Succeeded")[1] == "Started"
    covering = CacheEntry(run="older", uid="u-0", result=result)
    reused = decide(spec(requirementRefs=[{"name": "fair"}], cachePolicy="reuse"), TrainingRunStatus(),
                    world(requirements=(("fair", fair),), test_datasets={"ns/cases": cases}, cache_hit=covering), NOW)
    assert not reused.of(WriteSpec) and cond(reused, "Succeeded")[1] == "CacheHit"
    assert reused.status["checks"][0]["key"] == slice_key(fair.metrics[0])
