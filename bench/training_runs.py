"""Benchmark: TrainingRun overhead and fan-out.

    .venv/bin/python bench/training_runs.py [--runs 200]

1. An iris run on the local executor: apply -> Succeeded, against the same fit in a plain
   Python process (interpreter start and imports included on both sides).
2. N TrainingRuns applied at once with the kubernetes executor: time until every Job exists
   and every run is Running, and the operator's peak RSS.
Starts its own local stack and runs the operator as a separate process. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

PLAIN_FIT = textwrap.dedent("""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler
    x, y = load_iris(return_X_y=True, as_frame=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=7, stratify=y)
    model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=500))
    cross_validate(model, xt, yt, cv=StratifiedKFold(3, shuffle=True, random_state=7),
                   scoring=["accuracy", "balanced_accuracy", "f1_macro"])
    model.fit(xt, yt)
    print(model.score(xv, yv))
""")


def doc(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "bench"}, "spec": spec}


def kubectl(*args: str, input: str | None = None) -> str:
    from mloop.k8s.kubectl import kubectl as run

    return run(*args, input=input, check=True, timeout=300).stdout


def wait(predicate, timeout: float, interval: float = 0.25) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError("benchmark condition not reached")


def phases() -> list[str]:
    out = kubectl("get", "tr", "-n", "bench", "-o", "jsonpath={range .items[*]}{.status.phase}{' '}{end}")
    return out.split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    from mloop.k8s.crds import install_crds
    from mloop.localcluster import LocalStack

    stack = LocalStack()
    info = stack.start()
    workdir = Path(tempfile.mkdtemp(prefix="mloop-bench-"))
    env = {**os.environ, **info.env(), "MLOOP_EXECUTOR": "local", "MLOOP_LIVENESS_PORT": "0",
           "MLOOP_LOCAL_DIR": str(workdir / "tasks"), "MLOOP_POLL_INTERVAL": "1"}
    os.environ.update(env)
    operator = None
    try:
        install_crds(info.kubeconfig)
        kubectl("create", "namespace", "bench")
        kubectl("create", "secret", "generic", "mloop-s3", "-n", "bench",
                f"--from-literal=AWS_ACCESS_KEY_ID={info.s3_access_key}",
                f"--from-literal=AWS_SECRET_ACCESS_KEY={info.s3_secret_key}")
        operator = subprocess.Popen([sys.executable, "-m", "mloop"], env=env, stdout=open(workdir / "operator.log", "w"),
                                    stderr=subprocess.STDOUT)
        kubectl("apply", "-f", "-", input=yaml.safe_dump(doc("Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})))
        wait(lambda: kubectl("get", "dset", "iris", "-n", "bench", "-o", "jsonpath={.status.phase}") == "Ready", 120)

        spec = {"datasetRef": {"name": "iris"}, "target": "species",
                "estimator": {"name": "LogisticRegression", "params": {"max_iter": 500}},
                "split": {"testFraction": 0.25, "seed": 7}, "cv": {"folds": 3}}
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=yaml.safe_dump(doc("TrainingRun", "iris-local", spec)))
        wait(lambda: kubectl("get", "tr", "iris-local", "-n", "bench", "-o", "jsonpath={.status.phase}") == "Succeeded", 300, 0.05)
        operator_time = time.monotonic() - started
        plain = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-c", PLAIN_FIT], check=True, capture_output=True)
            plain.append(time.monotonic() - t0)
        plain_time = min(plain)

        manifests = [doc("TrainingRun", f"fan-{i:03d}", {**spec, "executor": "kubernetes"}) for i in range(args.runs)]
        started = time.monotonic()
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
        applied = time.monotonic() - started

        def jobs_exist() -> bool:
            names = kubectl("get", "jobs", "-n", "bench", "-o", "name").split()
            return len(names) >= args.runs

        jobs_time = applied + wait(jobs_exist, 900, 1.0)
        running_time = applied + wait(lambda: phases().count("Running") >= args.runs, 900, 1.0)
        rss = 0
        for line in Path(f"/proc/{operator.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        stack.cleanup()
    print(textwrap.dedent(f"""
        TrainingRun benchmark ({os.cpu_count()} cores)

        | measure | mloop | peer / limit | ratio |
        |---|---|---|---|
        | iris run, apply -> Succeeded (local executor) | {operator_time:.2f} s | plain Python process {plain_time:.2f} s | {operator_time / plain_time:.2f}x |
        | {args.runs} runs applied at once: every Job exists | {jobs_time:.1f} s | - | {args.runs / jobs_time:.1f} runs/s |
        | {args.runs} runs applied at once: every status Running | {running_time:.1f} s | - | - |
        | operator peak RSS | {rss} MB | - | - |
    """))


if __name__ == "__main__":
    main()
