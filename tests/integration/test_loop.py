"""The whole loop through the local executor: serve, collect predictions and labels, cut a version,
retrain, and promote the better model onto the same endpoint."""

from __future__ import annotations

import json

from sklearn.datasets import load_iris

from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for
from tests.integration.test_cli_runs import mloop
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_serving import get, post
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


def loop_traffic() -> tuple[list[dict[str, float]], list[str]]:
    """60 requests a weak first model half gets wrong (30 setosa, then 30 versicolor) and their true labels."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.iloc[list(range(0, 30)) + list(range(50, 80))]
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    instances = [dict(zip(columns, map(float, row))) for row in frame.iloc[:, :4].itertuples(index=False)]
    return instances, [str(iris.target_names[t]) for t in frame["target"]]


def test_full_loop(kubectl, api_client, namespace, cloudevents_sink, operator, kubeconfig) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "species", {
        "title": "Suggest the species", "metrics": [{"metric": "accuracy", "min": 0.6, "primary": True}],
        "retrain": {"templateRunRef": {"name": "stump"}, "datasetRef": {"name": "feedback"},
                    "trigger": {"minNewRows": 40}, "promoteTo": "Production"}})
    # A deliberately weak first model: one split tells setosa from the rest.
    apply_object(kubectl, namespace, "TrainingRun", "stump", {**IRIS_RUN, "requirementRefs": [{"name": "species"}],
                 "estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 1}}})
    first_run = succeeded(api_client, namespace, "stump")
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "stump"},
                                                                  "stage": "Production", "serve": {"samplingRate": 1.0}})
    packaged(api_client, namespace, "iris-1")
    served = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1")) and
                      (c := condition(o, "Serving")) and c["status"] == "True" and o, timeout=60)
    endpoint = served["status"]["endpoint"]
    apply_object(kubectl, namespace, "Dataset", "feedback", {"source": {"collection": {
        "model": "iris", "stage": "Production", "minNewRows": 40, "interval": "1s"}}})

    # Real traffic: setosa and versicolor flowers, then the true labels for each prediction.
    instances, truth = loop_traffic()
    code, answer = post(f"{endpoint}/predict", {"instances": instances[:20]})
    assert code == 200
    assert post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": t} for i, t in zip(answer["ids"], truth)]})[0] == 202
    # Below minNewRows nothing is cut; the condition says how far along collection is.
    not_yet = wait_for(lambda: (c := condition(get_object(api_client, namespace, "datasets", "feedback"), "Ready"))
                       and c["message"].startswith("20 new") and c, timeout=60)
    assert (not_yet["reason"], not_yet["message"]) == ("NotEnoughRows", "20 new labelled rows, 40 needed")
    assert "version" not in get_object(api_client, namespace, "datasets", "feedback")["status"]
    code, answer = post(f"{endpoint}/predict", {"instances": instances[20:]})
    post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": t} for i, t in zip(answer["ids"], truth[20:])]})

    collected = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "feedback")["status"]).get("version")
                         and s, timeout=90)
    assert collected["rows"] == 60 and collected["sourceVersion"] == "collected:iris:iris-1"
    roles = {c["name"]: c["role"] for c in collected["columns"]}
    assert roles["row_id"] == "id" and roles["served_at"] == "timestamp" and roles["species"] == "feature"

    retrain = wait_for(lambda: (s := get_object(api_client, namespace, "requirements", "species")["status"]).get(
        "retrains") and s["retrains"][0], timeout=60)
    assert retrain["run"] == "species-retrain-1" and retrain["datasetVersion"] == collected["version"]
    # Users hear of it twice: a Kubernetes event on the Requirement and a CloudEvent at the configured sink.
    wait_for(lambda: "RetrainTriggered" in [r for r, _ in k8s_events(api_client, namespace, "species")], timeout=30)
    triggered = wait_for(lambda: cloudevents_sink.of_type("dev.mloop.requirement.retrain.triggered", "species"),
                         timeout=30)
    assert triggered[0].get_data()["message"].startswith(f"species-retrain-1 on feedback@{collected['version']}")
    assert "60 new labelled rows" in retrain["reason"]
    run = succeeded(api_client, namespace, "species-retrain-1", timeout=120)
    assert run["status"]["dataset"] == f"feedback@{collected['version']}"
    assert run["status"]["metrics"]["accuracy"] > first_run["status"]["metrics"]["accuracy"]
    promoted = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "species-retrain-1")).get(
        "status", {}).get("stage") == "Production" and o, timeout=120)
    beats = {r["criterion"]: r for r in promoted["status"]["requirements"]}["beats-production:accuracy"]
    assert beats["passed"] is True and beats["operator"] == ">"
    assert promoted["status"]["version"] == 2 and promoted["status"]["endpoint"] == endpoint
    wait_for(lambda: get_object(api_client, namespace, "modelpackages", "iris-1")["status"]["stage"] == "Archived",
             timeout=30)
    wait_for(lambda: json.loads(get(f"{endpoint}/v2/models/iris")[1] or "{}").get("versions") == ["2"], timeout=60)
    code, answer = post(f"{endpoint}/predict", {"instances": [instances[-1]]})
    assert code == 200 and answer["version"] == 2
    outcome = wait_for(lambda: get_object(api_client, namespace, "requirements", "species")["status"]["retrains"][0][
        "outcome"].startswith("promoted") and True, timeout=60)
    assert outcome
    lineage = mloop("lineage", "mp/species-retrain-1", "-n", namespace, kubeconfig=kubeconfig).stdout
    assert f"<- dataset/feedback@{collected['version']}" in lineage and "<- modelpackage/iris-1" in lineage


def test_drift_against_the_production_data_triggers_retraining(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "drifty", {
        "title": "Notice drift", "metrics": [{"metric": "accuracy", "min": 0.5, "primary": True}],
        "retrain": {"templateRunRef": {"name": "base"}, "datasetRef": {"name": "seen"},
                    "trigger": {"driftThreshold": 0.5}}})
    apply_object(kubectl, namespace, "TrainingRun", "base", {**IRIS_RUN, "requirementRefs": [{"name": "drifty"}]})
    succeeded(api_client, namespace, "base")
    apply_object(kubectl, namespace, "ModelPackage", "base-1", {"model": "iris", "trainingRunRef": {"name": "base"},
                                                                  "stage": "Production", "serve": {}})
    endpoint = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "base-1")) and
                        (c := condition(o, "Serving")) and c["status"] == "True" and o["status"]["endpoint"], timeout=90)
    apply_object(kubectl, namespace, "Dataset", "seen", {"source": {"collection": {"model": "iris", "minNewRows": 30,
                                                                                   "interval": "1s"}}})
    # Only large virginica flowers arrive: petal sizes are far from the training data's spread.
    iris = load_iris(as_frame=True).frame.iloc[110:150]
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [dict(zip(columns, map(float, r))) for r in iris.iloc[:, :4].itertuples(index=False)]
    code, answer = post(f"{endpoint}/predict", {"instances": rows})
    assert code == 200
    post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": "virginica"} for i in answer["ids"]]})
    record = wait_for(lambda: ((get_object(api_client, namespace, "requirements", "drifty")["status"] or {})
                               .get("retrains") or [None])[0], timeout=120)
    assert record["run"] == "drifty-retrain-1"
    assert "against the production model's data" in record["reason"] and "drift PSI" in record["reason"]
