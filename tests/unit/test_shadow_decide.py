"""Shadow evaluation in tables: the live criterion, a candidate's shadow server, Production's shadow targets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mloop.api.requirement import LiveComparison
from mloop.builders.server import build_deployment
from mloop.config import Settings
from mloop.reconcile.live import LiveScore, criterion
from mloop.reconcile.modelpackage import (
    EnsureLocalServer,
    LocalServer,
    RecordLiveScore,
    ShadowFit,
    ShadowTargetView,
    StopLocalServer,
    decide,
    in_flight,
    shadow_fit,
)
from mloop.serving.livescore import metric_value
from tests.unit.test_modelpackage_decide import DIGEST, NOW, PACKAGED, REQ, sibling, spec, status, world

LIVE = LiveComparison(margin=0.05, minRows=50)
SCORE = LiveScore("iris-1", 1, "accuracy", 80, 0.95, 0.80, "s3://b/shadow/ns/iris/2-vs-1.json")


@pytest.mark.parametrize("desired, holds, holder, score, passed, message", [
    ("Production", True, "iris-1", None, True, "holds Production"),
    ("Production", False, None, None, True, "no package is in Production yet"),
    ("Production", False, "iris-1", None, False, "no live rows scored against iris-1"),
    ("Staging", False, "iris-1", None, None, "no live rows scored against iris-1"),
    ("Production", False, "iris-1", LiveScore("iris-1", 1, "accuracy", 12, 0.9, 0.5), False,
     "12 labelled live rows, 50 needed"),
    ("Production", False, "iris-1", SCORE, True, "0.95 vs 0.8 of iris-1 on 80 live rows: beats it by +0.15"),
    ("Production", False, "iris-1", LiveScore("iris-1", 1, "accuracy", 80, 0.82, 0.80), False,
     "does not beat it by +0.02, margin 0.05 needed"),
    ("Production", False, "iris-1", LiveScore("iris-1", 1, "accuracy", 80, 0.70, 0.80), False, "by -0.1"),
    ("Staging", False, "iris-1", SCORE, None, "beats it by +0.15"),
    ("Production", False, "iris-3", SCORE, False, "no live rows scored against iris-3"),  # scored against another
])
def test_live_criterion(desired, holds, holder, score, passed, message) -> None:
    result = criterion("req", LIVE, "accuracy", desired, holds, holder, score, lower_is_better=False)
    assert result.criterion == "live:accuracy" and result.passed is passed and message in result.message


def test_live_criterion_lower_is_better_and_zero_margin() -> None:
    rmse = LiveScore("p", 1, "rmse", 200, 3.0, 4.0)
    assert criterion("req", LiveComparison(minRows=10), "rmse", "Production", False, "p", rmse, True).passed
    equal = LiveScore("p", 1, "accuracy", 200, 0.9, 0.9)
    assert criterion("req", LiveComparison(minRows=10), "accuracy", "Production", False, "p", equal, False).passed is False


@pytest.mark.parametrize("metric, y, p, value", [
    ("accuracy", ["a", "b", "a", "a"], ["a", "b", "b", "a"], 0.75),
    ("accuracy", [1, 0], ["1", "0"], 1.0),  # JSON may carry a label as a number or a string
    ("balanced_accuracy", ["a", "a", "a", "b"], ["a", "a", "a", "a"], 0.5),
    ("f1_macro", ["a", "b"], ["a", "a"], (2 / 3 + 0) / 2),
    ("rmse", [1.0, 3.0], [2.0, 3.0], (0.5) ** 0.5),
    ("mae", [1.0, 3.0], [2.0, 5.0], 1.5),
    ("r2", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0),
])
def test_live_metrics(metric, y, p, value) -> None:
    assert metric_value(metric, y, p) == pytest.approx(value)


def test_a_metric_live_rows_cannot_give_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="roc_auc is not computed on live rows"):
        metric_value("roc_auc", ["a"], ["a"])


SHADOWING = {**PACKAGED, "shadow": {"state": "Shadowing", "endpoint": "http://127.0.0.1:9002", "production": "iris-1",
                                    "productionVersion": 1, "metric": "accuracy", "rows": 0,
                                    "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"]}}
REQ_LIVE = REQ.model_copy(update={"live": LIVE})


FITS = ShadowFit(columns=("sepal_length", "sepal_width", "petal_length", "petal_width"))


def test_no_shadow_server_starts_before_the_signatures_are_compared() -> None:
    d = decide(spec(shadow={}), status(**PACKAGED), world(siblings=(sibling(),)), NOW)
    assert not any(isinstance(a, EnsureLocalServer) for a in d.actions)
    assert d.status["shadow"]["state"] == "Starting" and in_flight(d.status)
    assert next(c for c in d.status["conditions"] if c["type"] == "Shadowing")["status"] == "Unknown"


def test_a_candidate_starts_its_shadow_server_while_another_package_holds_production() -> None:
    d = decide(spec(shadow={"samplingRate": 0.5}), status(**PACKAGED), world(siblings=(sibling(),), shadow_fit=FITS), NOW)
    start = next(a for a in d.actions if isinstance(a, EnsureLocalServer))
    assert start.stage == "shadow-2" and start.digest == DIGEST and start.shadows == ()
    assert d.status["shadow"]["state"] == "Starting" and d.status["shadow"]["production"] == "iris-1"
    assert in_flight(d.status)


def test_a_ready_shadow_server_is_announced_and_its_score_recorded() -> None:
    ready = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    d = decide(spec(shadow={}), status(**PACKAGED), world(siblings=(sibling(),), shadow_local=ready, live=SCORE,
                                                           shadow_fit=FITS), NOW)
    sh = d.status["shadow"]
    assert (sh["state"], sh["endpoint"], sh["rows"], sh["candidateValue"], sh["productionValue"]) == (
        "Shadowing", "http://127.0.0.1:9002", 80, 0.95, 0.80)
    assert any(isinstance(a, RecordLiveScore) for a in d.actions)
    assert "ShadowStarted" in [e.reason for e in d.events]


def test_the_gate_refuses_production_on_too_few_live_rows_and_grants_on_a_live_win() -> None:
    few = LiveScore("iris-1", 1, "accuracy", 10, 0.95, 0.80)
    ready = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    base = world(siblings=(sibling(),), shadow_local=ready, requirements={"req": REQ_LIVE})
    refused = decide(spec(shadow={}, stage="Production"), status(**SHADOWING), base.__class__(**{**base.__dict__, "live": few}), NOW)
    assert refused.status["stage"] == "None"
    assert "req/live:accuracy is 10 labelled live rows, 50 needed" in next(
        c["message"] for c in refused.status["conditions"] if c["type"] == "Promoted")
    granted = decide(spec(shadow={}, stage="Production"), status(**SHADOWING), base.__class__(**{**base.__dict__, "live": SCORE}), NOW)
    assert granted.status["stage"] == "Production"


def test_shadowing_stops_when_the_candidate_takes_production_keeping_its_last_score() -> None:
    ready = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    st = status(**{**SHADOWING, "stage": "Production", "shadow": {**SHADOWING["shadow"], "rows": 80}})
    d = decide(spec(shadow={}, stage="Production"), st, world(shadow_local=ready), NOW)
    assert StopLocalServer("shadow-2", DIGEST) in d.actions
    assert d.status["shadow"]["state"] == "Stopped" and d.status["shadow"]["endpoint"] is None
    assert d.status["shadow"]["rows"] == 80 and not in_flight({**d.status, "endpoint": None})


def test_the_score_that_wins_production_stays_in_the_status_when_shadowing_stops() -> None:
    ready = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    w = world(siblings=(sibling(),), shadow_local=ready, requirements={"req": REQ_LIVE}, live=SCORE)
    d = decide(spec(shadow={}, stage="Production"), status(**SHADOWING), w, NOW)
    assert d.status["stage"] == "Production" and d.status["shadow"]["state"] == "Stopped"
    assert (d.status["shadow"]["rows"], d.status["shadow"]["candidateValue"]) == (80, 0.95)
    assert RecordLiveScore(SCORE, 2) in d.actions and StopLocalServer("shadow-2", DIGEST) in d.actions


def test_the_production_server_is_told_its_shadow_targets_without_a_restart() -> None:
    target = ShadowTargetView("iris-2", "http://127.0.0.1:9002", 0.5)
    prod = {**PACKAGED, "stage": "Production"}
    running = {"Production": LocalServer("http://127.0.0.1:9001", DIGEST, alive=True, ready=True)}
    d = decide(spec(stage="Production", serve={}), status(**prod),
               world(local=running, shadow_targets=(target,)), NOW)
    assert EnsureLocalServer("Production", prod["uri"], DIGEST, 1.0, (target,), version=2) in d.actions
    assert d.status["shadowTargets"] == [{"package": "iris-2", "url": "http://127.0.0.1:9002", "samplingRate": 0.5}]
    told = {"Production": LocalServer("http://127.0.0.1:9001", DIGEST, alive=True, ready=True, shadows=(target,))}
    again = decide(spec(stage="Production", serve={}), status(**prod), world(local=told, shadow_targets=(target,)), NOW)
    assert not any(isinstance(a, EnsureLocalServer) for a in again.actions)


def test_a_deployment_names_its_shadow_targets_in_its_env() -> None:
    owner = {"apiVersion": "mloop.dev/v1alpha1", "kind": "ModelPackage", "name": "iris-1", "uid": "u"}
    targets = [{"package": "iris-2", "url": "http://iris-shadow-2.ns.svc.cluster.local", "samplingRate": 1.0}]
    args = ("ns", "iris", "Production", "iris-1", "s3://b/p/", DIGEST, 1, 1.0, None, Settings(), owner, "auto")
    env = {e["name"]: e.get("value") for e in build_deployment(*args, targets)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["MLOOP_SHADOWS"]) == targets
    assert "MLOOP_SHADOWS" not in {e["name"] for e in build_deployment(*args)["spec"]["template"]["spec"]["containers"][0]["env"]}


IRIS_INPUTS = [{"name": n, "type": "float"} for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]


@pytest.mark.parametrize("candidate, columns, refusal", [
    (IRIS_INPUTS, ("sepal_length", "sepal_width", "petal_length", "petal_width"), None),
    (IRIS_INPUTS[2:], ("petal_length", "petal_width"), None),  # fewer: only its own columns are forwarded
    ([{"name": "petal_width", "type": "integer"}], ("petal_width",), None),  # numeric on both sides
    ([*IRIS_INPUTS, {"name": "region", "type": "category"}], (), "input column 'region' is not in the requests iris-1"),
    ([{"name": "petal_width", "type": "category"}], (), "'petal_width' is category here and float in iris-1"),
])
def test_a_shadow_is_sent_only_what_productions_callers_send(candidate, columns, refusal) -> None:
    fit = shadow_fit(candidate, IRIS_INPUTS, "iris-1")
    assert fit.columns == columns and ((refusal is None and fit.refusal is None) or refusal in fit.refusal)


def test_a_candidate_needing_an_input_production_lacks_is_refused_and_runs_no_server() -> None:
    refused = ShadowFit(refusal="input column 'region' is not in the requests iris-1 takes (sepal_length)")
    running = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    d = decide(spec(shadow={}), status(**SHADOWING), world(siblings=(sibling(),), shadow_local=running,
                                                            shadow_fit=refused), NOW)
    assert StopLocalServer("shadow-2", DIGEST) in d.actions
    assert not any(isinstance(a, EnsureLocalServer) for a in d.actions)
    assert d.status["shadow"]["state"] == "Refused" and d.status["shadow"]["endpoint"] is None
    cond = next(c for c in d.status["conditions"] if c["type"] == "Shadowing")
    assert (cond["status"], cond["reason"]) == ("False", "SignatureMismatch") and "'region'" in cond["message"]
    assert [e.reason for e in d.events] == ["ShadowRefused"] and not in_flight(d.status)
    # The verdict is kept: the next pass (no signature read) neither restarts the server nor repeats the event.
    again = decide(spec(shadow={}), status(**{**SHADOWING, **d.status}), world(siblings=(sibling(),)), NOW)
    assert "shadow" not in again.status and "ShadowRefused" not in [e.reason for e in again.events]
    assert not any(isinstance(a, EnsureLocalServer) for a in again.actions)


def test_a_candidate_with_fewer_inputs_is_sent_its_columns_only() -> None:
    ready = LocalServer("http://127.0.0.1:9002", DIGEST, alive=True, ready=True)
    d = decide(spec(shadow={}), status(**PACKAGED), world(siblings=(sibling(),), shadow_local=ready,
                                                           shadow_fit=ShadowFit(columns=("petal_width",))), NOW)
    assert d.status["shadow"]["columns"] == ["petal_width"] and d.status["shadow"]["state"] == "Shadowing"
    assert next(c for c in d.status["conditions"] if c["type"] == "Shadowing")["status"] == "True"
    target = ShadowTargetView("iris-2", "http://127.0.0.1:9002", 1.0, ("petal_width",))
    assert target.to_wire()["columns"] == ["petal_width"]


async def receiver(got: list[dict], statuses: list[int] | None = None) -> tuple[Any, int]:
    """A candidate's /predict on a free loopback port, keeping each body it is sent: (runner to clean up, port).
    `statuses`: the HTTP statuses of the first answers, popped from the end (then 200)."""
    from aiohttp import web

    async def predict(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.json_response({}, status=statuses.pop() if statuses else 200)

    app = web.Application()
    app.router.add_post("/predict", predict)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_the_shadow_sender_batches_what_waits_and_forwards_only_the_targets_columns() -> None:
    import asyncio

    import numpy as np

    from mloop.serving.shadow import Shadow, parse_targets

    async def run() -> list[dict]:
        got: list[dict] = []
        runner, port = await receiver(got)
        shadow = Shadow(parse_targets(f'[{{"package": "c", "url": "http://127.0.0.1:{port}", "columns": ["b"]}}]'))
        await shadow.start()
        for i in range(3):  # queued before the sender runs: one POST carries them, each row under its own id
            shadow.offer([f"r-{i}"], {"a": np.array([float(i)]), "b": np.array([10.0 + i])})
        shadow.offer(["r-3-0", "r-3-1"], {"a": np.array([3.0, 3.5]), "b": np.array([13.0, 13.5])})
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
        await shadow.close()
        await runner.cleanup()
        return got

    assert [(g["ids"], g["inputs"]) for g in asyncio.run(run())] == [
        (["r-0", "r-1", "r-2", "r-3-0", "r-3-1"], {"b": [10.0, 11.0, 12.0, 13.0, 13.5]})]


def test_a_whole_batch_of_shadow_copies_is_sent_without_waiting_out_the_linger() -> None:
    """Copies wait for a batch to gather, but a full batch goes at once: at a high rate the bounded queue would
    otherwise fill during the linger and drop copies. (A linger of an hour: this test would time out.)"""
    import asyncio

    import numpy as np

    from mloop.serving.shadow import Shadow, parse_targets

    async def run() -> list[dict]:
        got: list[dict] = []
        runner, port = await receiver(got)
        shadow = Shadow(parse_targets(f'[{{"package": "c", "url": "http://127.0.0.1:{port}"}}]'), batch=3,
                        linger=3600)
        await shadow.start()
        for i in range(7):
            shadow.offer([f"r-{i}"], {"a": np.array([float(i)])})
            await asyncio.sleep(0)  # requests arrive one by one: the gatherer is lingering after the first
        for _ in range(1000):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        await shadow.close()
        await runner.cleanup()
        return got

    assert [g["ids"] for g in asyncio.run(run())] == [["r-0", "r-1", "r-2"], ["r-3", "r-4", "r-5"]]  # r-6 waits for its batch


def test_a_failing_target_is_paused_its_copies_dropped_and_counted_then_probed_again() -> None:
    """A dead target costs the Production worker one POST per pause, not one per batch: copies offered while its
    lane is paused are dropped (counted, nothing built or sent); after the pause the next batch is a probe, and a
    target that answers again is sent to as before."""
    import asyncio
    import socket

    import numpy as np

    from mloop.serving.shadow import DROPS_PUBLISHED_WITHIN, Shadow, ShadowMetrics, parse_targets

    def count(metrics: ShadowMetrics, outcome: str) -> float:
        return metrics._requests.labels("c", outcome)._value.get()

    async def dead() -> tuple[int, int, float]:
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()  # nothing listens there: every POST is refused
        metrics = ShadowMetrics()
        shadow = Shadow(parse_targets(f'[{{"package": "c", "url": "http://127.0.0.1:{port}"}}]'), metrics,
                        linger=0.01, pause=3600)
        await shadow.start()
        shadow.offer(["r-0"], {"a": np.array([0.0])})
        lane = shadow.lanes["c"]
        for _ in range(500):
            if lane.paused:
                break
            await asyncio.sleep(0.01)
        for i in range(1, 21):
            shadow.offer([f"r-{i}"], {"a": np.array([float(i)])})
        await asyncio.sleep(DROPS_PUBLISHED_WITHIN + 0.2)
        counted = metrics._posts.labels("c")._value.get(), lane.queued, count(metrics, "dropped")  # before close()
        await shadow.close()
        return counted

    # One refused POST; the 20 copies after it dropped, none queued; the drops on the metric during the pause.
    assert asyncio.run(dead()) == (1, 0, 20)

    async def recovers() -> tuple[list[list[str]], int]:
        got: list[dict] = []
        runner, port = await receiver(got, [500])
        shadow = Shadow(parse_targets(f'[{{"package": "c", "url": "http://127.0.0.1:{port}"}}]'), linger=0.01,
                        pause=0.3)
        await shadow.start()
        lane = shadow.lanes["c"]
        shadow.offer(["a"], {"a": np.array([0.0])})  # answered 500: paused 0.3 s
        while not lane.paused:
            await asyncio.sleep(0.01)
        shadow.offer(["b"], {"a": np.array([1.0])})  # dropped: paused
        while lane.paused:
            await asyncio.sleep(0.01)
        shadow.offer(["c"], {"a": np.array([2.0])})  # the probe: answered
        for _ in range(500):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        failures = lane.failures
        await shadow.close()
        await runner.cleanup()
        return [g["ids"] for g in got], failures

    assert asyncio.run(recovers()) == ([["a"], ["c"]], 0)
