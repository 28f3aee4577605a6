"""Retraining on everything: the retrain policy names a union of the original Dataset and the collected one, fires
when the collection cuts a version, and pins the union's version made from it (which is cut after it)."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
from sklearn.datasets import load_iris

from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for
from tests.integration.test_cli_runs import mloop
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_serving import post
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_retrain_trains_on_the_union_version_that_holds_the_new_rows(kubectl, api_client, namespace, operator, s3,
                                                                     kubeconfig) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "species", {
        "title": "Suggest the species", "metrics": [{"metric": "accuracy", "min": 0.5, "primary": True}],
        "retrain": {"templateRunRef": {"name": "base"}, "datasetRef": {"name": "feedback"},
                    "trainingDatasetRef": {"name": "everything"}, "trigger": {"minNewRows": 30}}})
    apply_object(kubectl, namespace, "TrainingRun", "base", {**IRIS_RUN, "requirementRefs": [{"name": "species"}]})
    succeeded(api_client, namespace, "base")
    apply_object(kubectl, namespace, "ModelPackage", "base-1", {"model": "iris", "trainingRunRef": {"name": "base"},
                                                                  "stage": "Production", "serve": {"samplingRate": 1.0}})
    packaged(api_client, namespace, "base-1")
    endpoint = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "base-1")) and
                        (c := condition(o, "Serving")) and c["status"] == "True" and o["status"]["endpoint"], timeout=90)
    apply_object(kubectl, namespace, "Dataset", "feedback", {"source": {"collection": {
        "model": "iris", "minNewRows": 30, "interval": "1s"}}})
    # The original rows and the collected ones, with the collection's row_id and served_at left out.
    apply_object(kubectl, namespace, "Dataset", "everything", {"source": {"derived": {"union": {
        "datasets": [{"name": "iris"}, {"name": "feedback"}], "columns": [*FEATURES, "species"]}}}})

    iris = load_iris(as_frame=True)
    frame = iris.frame.iloc[100:140]
    instances = [dict(zip(FEATURES, map(float, r))) for r in frame.iloc[:, :4].itertuples(index=False)]
    code, answer = post(f"{endpoint}/predict", {"instances": instances})
    assert code == 200
    labels = [str(iris.target_names[t]) for t in frame["target"]]
    post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": y} for i, y in zip(answer["ids"], labels)]})

    collected = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "feedback").get("status") or {}).get(
        "version") and s, timeout=120)
    record = wait_for(lambda: ((get_object(api_client, namespace, "requirements", "species").get("status") or {})
                               .get("retrains") or [None])[0], timeout=120)
    union = get_object(api_client, namespace, "datasets", "everything")["status"]
    pinned = record["trainedOn"].split("@")[1]
    assert record["datasetVersion"] == collected["version"] and record["trainedOn"] == f"everything@{pinned}"
    made_from = next(v for v in union["versions"] if v["version"] == pinned)
    assert made_from["rows"] == 150 + 40
    # The pinned union version holds both the original rows and the fed-back ones.
    key = made_from["uri"].split("/", 3)[3] + "data.parquet"
    rows = pq.read_table(io.BytesIO(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())).to_pandas()
    assert list(rows.columns) == [*FEATURES, "species"]
    fed_back = sorted(zip(map(tuple, frame.iloc[:, :4].to_numpy().tolist()), labels))
    assert sorted(zip(map(tuple, rows.iloc[150:][FEATURES].to_numpy().tolist()), rows.iloc[150:]["species"])) == fed_back
    assert rows.iloc[:150]["species"].value_counts().to_dict() == {"setosa": 50, "versicolor": 50, "virginica": 50}
    if union["version"] == pinned:
        assert {(p["name"], p["version"]) for p in union["parents"]} >= {("feedback", collected["version"])}

    run = succeeded(api_client, namespace, record["run"], timeout=180)
    assert run["status"]["dataset"] == f"everything@{pinned}"
    message = next(m for r, m in k8s_events(api_client, namespace, "species") if r == "RetrainTriggered")
    assert message.startswith(f"{record['run']} on everything@{pinned} (includes feedback@{collected['version']})")
    # Lineage from the retrained run reaches both parents of its data.
    upstream = mloop("lineage", f"tr/{record['run']}", "-n", namespace, kubeconfig=kubeconfig).stdout.split(
        "downstream:")[0]
    assert f"<- dataset/everything@{pinned}" in upstream
    assert f"<- dataset/feedback@{collected['version']}" in upstream and "<- dataset/iris@" in upstream
