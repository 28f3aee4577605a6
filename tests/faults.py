"""The fault-injection harness: a mixed workload, the operator as a killable process, and what a user would check
afterwards (objects, S3 records, Kubernetes events, processes), compared with a run that saw no faults."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

GROUP, VERSION = "mloop.dev", "v1alpha1"
TERMINAL_EVENTS = {"Dataset": {"VersionCut"}, "TrainingRun": {"RunSucceeded", "CacheHit"},
                   "ModelPackage": {"PromotionGranted", "PromotionRefused"}}
SUCCESS = {"Dataset": ("Ready", "Ready"), "TrainingRun": ("Succeeded", "Succeeded"),
           "ModelPackage": ("Packaged", "Packaged")}  # kind -> (condition, phase) of a good outcome
PLURALS = {"Dataset": "datasets", "TrainingRun": "trainingruns", "ModelPackage": "modelpackages"}

LR = {"name": "LogisticRegression", "params": {"max_iter": 1000}}
SPLIT = {"testFraction": 0.25, "seed": 7}


# -- the workload ----------------------------------------------------------------------------------------------

@dataclass
class Workload:
    first: list[dict]  # applied at once
    later: dict[str, dict]  # cache-reuse duplicates, applied once the run they copy has succeeded: name of that run
    models: dict[str, list[str]]  # registered model -> its packages
    production: dict[str, str]  # model -> the package that asks for Production
    served: str

    def names(self, kind: str) -> list[str]:
        return [m["metadata"]["name"] for m in [*self.first, *self.later.values()] if m["kind"] == kind]


def manifest(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}


def workload(full: bool = False) -> Workload:
    """Datasets (builtin iris and wine, inline rows), runs (one a grid search, two cache-reuse duplicates), and
    three packages per model, one asking Production and served. The full size doubles runs and packages."""
    inline = {"columns": ["plan", "spend", "churned"],
              "rows": [["a" if i % 2 else "b", float(i % 7), "yes" if i % 2 else "no"] for i in range(40)]}
    first = [manifest("Dataset", "iris", {"source": {"builtin": {"name": "iris"}}}),
             manifest("Dataset", "wine", {"source": {"builtin": {"name": "wine"}}}),
             manifest("Dataset", "churn", {"source": {"inline": inline}})]
    iris = {"datasetRef": {"name": "iris"}, "target": "species", "estimator": LR, "split": SPLIT}
    wine = {"datasetRef": {"name": "wine"}, "target": "cultivar", "estimator": LR, "split": SPLIT,
            "preprocessing": {"numeric": {"scale": "standard"}}}
    runs = {
        "iris-lr": {**iris, "cachePolicy": "reuse", "cv": {"folds": 3}},
        "iris-c01": {**iris, "estimator": {**LR, "params": {"max_iter": 1000, "C": 0.1}}},
        "iris-tree": {**iris, "estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 3}}},
        "iris-grid": {**iris, "search": {"type": "grid", "parameters": {"C": [0.1, 1.0, 10.0]}, "scoring": "accuracy",
                                         "parallelism": 2}},
        "wine-lr": {**wine, "cachePolicy": "reuse"},
        "wine-c05": {**wine, "estimator": {**LR, "params": {"max_iter": 1000, "C": 0.5}}},
        "wine-tree": {**wine, "estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 4}}},
        "churn-lr": {"datasetRef": {"name": "churn"}, "target": "churned", "estimator": LR,
                     "split": {"testFraction": 0.25, "seed": 1}},
    }
    if full:
        runs |= {f"{name}-s{seed}": {**spec, "split": {**spec["split"], "seed": seed}}
                 for name, spec in list(runs.items()) if "search" not in spec for seed in (11, 12)}
    first += [manifest("TrainingRun", name, spec) for name, spec in runs.items()]
    later = {"iris-lr": manifest("TrainingRun", "iris-lr-again", runs["iris-lr"]),
             "wine-lr": manifest("TrainingRun", "wine-lr-again", runs["wine-lr"])}
    per_model = 5 if full else 3
    sources = {"iris": ["iris-lr", "iris-c01", "iris-tree", "iris-grid", "iris-lr"],
               "wine": ["wine-lr", "wine-c05", "wine-tree", "wine-lr", "wine-c05"]}
    models: dict[str, list[str]] = {}
    production: dict[str, str] = {}
    for model, runs_of in sources.items():
        names = [f"{model}-pkg-{i}" for i in range(1, per_model + 1)]
        models[model] = names
        production[model] = names[-1]
        for name, run in zip(names, runs_of):
            spec: dict[str, Any] = {"model": model, "trainingRunRef": {"name": run},
                                    "stage": "Production" if name == production[model] else "Staging"}
            if model == "iris" and name == production[model]:
                spec["serve"] = {"enabled": True, "samplingRate": 0.0}
            first.append(manifest("ModelPackage", name, spec))
    return Workload(first, later, models, production, production["iris"])


# -- the operator as a process ---------------------------------------------------------------------------------

class Operator:
    """`python -m mloop` watching one namespace with the local executor and a private task folder; started again
    after every kill. Its output goes to one log, each start marked."""

    def __init__(self, stack_env: dict[str, str], namespace: str, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.local_dir = directory / "local"
        self.log_path = directory / "operator.log"
        # Only what this suite sets: nothing MLOOP_* leaks in from the shell that started pytest.
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_") and k != "KUBECONFIG"}
        self.env = {**base, **stack_env, "MLOOP_EXECUTOR": "local", "MLOOP_LOCAL_DIR": str(self.local_dir),
                    "MLOOP_LIVENESS_PORT": "0", "MLOOP_NAMESPACES": namespace, "MLOOP_POLL_INTERVAL": "0.5"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.offset = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"===== operator start {self.starts} at {time.time():.3f}\n".encode())
                log.flush()
                self.offset = log.tell()
                self.proc = subprocess.Popen([sys.executable, "-m", "mloop"], env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_working(self, timeout: float = 60) -> bool:
        """Until this start has run a handler (it logs one line per handler): before that it is still importing
        or listing, and kills there only ever repeat the start-up. False when it had nothing to do."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(self.offset)
                if b"kopf.objects" in log.read():
                    return True
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL the operator alone: its tasks and model servers run on, as they would after a node crash."""
        with self.lock:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            with open(self.log_path, "ab") as log:
                log.write(f"===== SIGKILL at {time.time():.3f}\n".encode())

    def stop(self) -> int:
        with self.lock:
            if self.proc is None:
                return 0
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- applying and waiting -----------------------------------------------------------------------------------------

def apply(kubectl: Callable[..., Any], namespace: str, manifests: list[dict], timeout: float = 120) -> None:
    """kubectl apply, again until the API server answers (it may be restarting)."""
    text = yaml.safe_dump_all(manifests)
    deadline = time.monotonic() + timeout
    while True:
        done = kubectl("apply", "-n", namespace, "-f", "-", input=text)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"kubectl apply failed: {done.stderr}")
        time.sleep(1)


def list_kind(api: client.CustomObjectsApi, namespace: str, kind: str) -> dict[str, dict]:
    items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind])["items"]
    return {o["metadata"]["name"]: o for o in items}


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def settled(kind: str, obj: dict, served: str) -> bool:
    """Finished (well or not) with nothing owed: no task in flight, an empty outbox."""
    status = obj.get("status") or {}
    if status.get("task") or status.get("outbox"):
        return False
    phase = status.get("phase")
    if kind == "Dataset":
        return phase in ("Ready", "Failed")
    if kind == "TrainingRun":
        return phase in ("Succeeded", "Failed")
    if phase == "Failed":
        return True
    if phase != "Packaged" or not status.get("stage"):
        return False
    return obj["metadata"]["name"] != served or condition(obj, "Serving").get("status") == "True"


def unsettled(api: client.CustomObjectsApi, work: Workload, namespace: str) -> list[str]:
    """Objects of the workload not settled yet; an unreachable API server counts everything as unsettled."""
    try:
        found = {kind: list_kind(api, namespace, kind) for kind in PLURALS}
    except Exception:  # ApiException, or urllib3's own errors while the server restarts
        return ["(api server unreachable)"]
    return [f"{kind}/{name}" for kind in PLURALS for name in work.names(kind)
            if name not in found[kind] or not settled(kind, found[kind][name], work.served)]


def wait_settled(api: client.CustomObjectsApi, work: Workload, namespace: str, timeout: float) -> list[str]:
    """Wait until everything settled and stays so for a few seconds; returns what did not (stuck objects)."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    left: list[str] = []
    while time.monotonic() < deadline:
        left = unsettled(api, work, namespace)
        if left:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 3:
            return []
        time.sleep(0.5)
    return left


def apply_later(api: client.CustomObjectsApi, kubectl: Callable[..., Any], work: Workload, namespace: str,
                timeout: float) -> None:
    """Each duplicate once the run it copies has succeeded, so that a fault-free run takes the cache."""
    pending = dict(work.later)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        try:
            runs = list_kind(api, namespace, "TrainingRun")
        except Exception:  # the API server may be restarting
            runs = {}
        for original in list(pending):
            if ((runs.get(original) or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                apply(kubectl, namespace, [pending.pop(original)])
        time.sleep(0.5)
    if pending:
        apply(kubectl, namespace, list(pending.values()))


# -- what a user would check ------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    objects: dict[str, dict[str, dict]]  # kind -> name -> object
    dataset_versions: dict[str, set[str]]  # dataset -> digests with a manifest.json in S3
    incomplete_versions: dict[str, set[str]]  # dataset -> digests without one
    run_records: dict[str, dict[str, Counter]]  # run -> uid folder -> file name counts
    cache_entries: dict[str, str]  # cache key -> the run recorded under it
    claims: dict[str, dict[int, dict]]  # model -> version -> claim.json
    events: dict[tuple[str, str], Counter]  # (kind, name) -> reason counts
    tasks: Counter  # "train-iris-lr" -> local tasks launched for it (names end in a hash of their intent)
    leftovers: list[str] = field(default_factory=list)  # processes left behind


def s3_keys(s3: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def snapshot(api_client: Any, s3: Any, namespace: str, local_dir: Path) -> Snapshot:
    import json

    api = client.CustomObjectsApi(api_client)
    objects = {kind: list_kind(api, namespace, kind) for kind in PLURALS}
    versions: dict[str, set[str]] = {}
    folders: dict[str, set[str]] = {}
    for key in s3_keys(s3, f"datasets/{namespace}/"):
        _, _, name, digest, file = key.split("/", 4)
        folders.setdefault(name, set()).add(digest)
        if file == "manifest.json":
            versions.setdefault(name, set()).add(digest)
    incomplete = {name: digests - versions.get(name, set()) for name, digests in folders.items()
                  if digests - versions.get(name, set())}
    records: dict[str, dict[str, Counter]] = {}
    for key in s3_keys(s3, f"runs/{namespace}/"):
        _, _, name, uid, file = key.split("/", 4)
        records.setdefault(name, {}).setdefault(uid, Counter())[file] += 1
    cache = {key.rsplit("/", 1)[1]: json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())["run"]
             for key in s3_keys(s3, f"cache/{namespace}/")}
    claims: dict[str, dict[int, dict]] = {}
    for key in s3_keys(s3, f"packages/{namespace}/"):
        _, _, model, version, file = key.split("/", 4)
        if file == "claim.json":
            body = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
            claims.setdefault(model, {})[int(version)] = body
    events: dict[tuple[str, str], Counter] = {}
    for e in client.CoreV1Api(api_client).list_namespaced_event(namespace).items:
        events.setdefault((e.involved_object.kind, e.involved_object.name), Counter())[e.reason] += e.count or 1
    tasks = Counter(path.name.removeprefix(f"{namespace}.").removesuffix(".json").rsplit("-", 1)[0]
                    for path in local_dir.glob(f"{namespace}.*.json"))
    return Snapshot(objects, versions, incomplete, records, cache, claims, events, tasks)


def fault_events(control: Snapshot, got: Snapshot) -> Counter:
    """Events whose reason the control never posted (StorageUnavailable, TaskRetried...): the fault was felt."""
    seen = {reason for counts in control.events.values() for reason in counts}
    return sum((Counter({r: n for r, n in counts.items() if r not in seen}) for counts in got.events.values()),
               Counter())


def dump(got: Snapshot, path: Path) -> None:
    """Statuses and event counts, kept beside the operator log for whoever reads a failure."""
    import json

    path.write_text(json.dumps({
        "status": {f"{kind}/{name}": o.get("status") for kind, objs in got.objects.items() for name, o in objs.items()},
        "events": {f"{kind}/{name}": counts for (kind, name), counts in got.events.items()},
        "tasks": got.tasks, "cache": got.cache_entries, "claims": got.claims}, indent=1, default=str))


def leftover_processes(*needles: str) -> list[str]:
    """Live processes whose command line mentions any needle (zombies have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def timing_free(metrics: dict | None) -> dict:
    return {k: v for k, v in (metrics or {}).items() if not k.endswith("_seconds")}


# -- comparing with the control -----------------------------------------------------------------------------------

@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # expected, not a defect: shown, never failed on

    def empty(self) -> bool:
        return not (self.lost or self.duplicated or self.stuck or self.wrong or self.left)

    def text(self) -> str:
        return "\n".join(f"{what}: {item}" for what in ("stuck", "lost", "duplicated", "wrong", "left", "retried")
                         for item in getattr(self, what))


def compare(work: Workload, control: Snapshot, got: Snapshot, stuck: list[str], retries: bool = False) -> Findings:
    """What differs from the control. With `retries`, tasks started again after a failed attempt (an S3 outage)
    are expected and not counted as duplicates."""
    f = Findings(stuck=list(stuck), left=list(got.leftovers))
    for task, count in sorted((got.tasks - control.tasks).items()):
        (f.retried if retries else f.duplicated).append(f"{count} more local task(s) {task}-* than the control ran")
    dsets, runs, pkgs = (got.objects[k] for k in ("Dataset", "TrainingRun", "ModelPackage"))
    c_dsets, c_runs, c_pkgs = (control.objects[k] for k in ("Dataset", "TrainingRun", "ModelPackage"))

    for kind, objs in got.objects.items():
        f.wrong += [f"{kind}/{name}: phase {(o.get('status') or {}).get('phase')}, "
                    f"{condition(o, SUCCESS[kind][0]).get('message', '')[:300]}"
                    for name, o in objs.items() if (o.get("status") or {}).get("phase") != SUCCESS[kind][1]]
    for name in work.names("Dataset"):
        status, c_status = (dsets.get(name) or {}).get("status") or {}, c_dsets[name].get("status") or {}
        if status.get("digest") != c_status.get("digest"):
            f.wrong.append(f"Dataset/{name}: digest {status.get('digest')} vs control {c_status.get('digest')}")
        mine, theirs = got.dataset_versions.get(name, set()), control.dataset_versions.get(name, set())
        f.lost += [f"Dataset/{name}: version {d[:12]} missing in S3" for d in sorted(theirs - mine)]
        f.duplicated += [f"Dataset/{name}: extra version {d[:12]} in S3" for d in sorted(mine - theirs)]
        f.duplicated += [f"Dataset/{name}: incomplete version folder {d[:12]} (no manifest.json)"
                         for d in sorted(got.incomplete_versions.get(name, set()))]

    for name in work.names("TrainingRun"):
        obj, c_obj = runs.get(name) or {}, c_runs[name]
        status, c_status = obj.get("status") or {}, c_obj.get("status") or {}
        if timing_free(status.get("metrics")) != timing_free(c_status.get("metrics")):
            f.wrong.append(f"TrainingRun/{name}: metrics {timing_free(status.get('metrics'))} vs control "
                           f"{timing_free(c_status.get('metrics'))}")
        uid = (obj.get("metadata") or {}).get("uid")
        folders = got.run_records.get(name, {})
        c_files = next(iter(control.run_records.get(name, {}).values()), Counter())
        f.duplicated += [f"TrainingRun/{name}: record folder of another uid {u}" for u in folders if u != uid]
        files = folders.get(uid, Counter())
        f.lost += [f"TrainingRun/{name}: {file} missing from its record" for file in sorted(set(c_files) - set(files))]
        f.duplicated += [f"TrainingRun/{name}: {file} not in the control's record" for file in
                         sorted(set(files) - set(c_files))]
    # Keys hash the spec, dataset digest and trainer environment, not the namespace: the same set as the control.
    f.lost += [f"TrainingRun/{run}: no cache entry (key {key[:12]})" for key, run in control.cache_entries.items()
               if key not in got.cache_entries]
    f.duplicated += [f"TrainingRun/{run}: cache entry the control has not (key {key[:12]})"
                     for key, run in got.cache_entries.items() if key not in control.cache_entries]

    for model, names in work.models.items():
        versions = sorted((pkgs.get(n) or {}).get("status", {}).get("version") or 0 for n in names)
        expected = list(range(1, len(names) + 1))
        if versions != expected:
            (f.duplicated if len(set(versions)) < len(versions) or max(versions) > len(names) else f.lost).append(
                f"ModelPackage model {model}: versions {versions}, expected {expected}")
        claims = got.claims.get(model, {})
        if sorted(claims) != expected:
            (f.duplicated if len(claims) > len(names) else f.lost).append(
                f"model {model}: claim objects for versions {sorted(claims)}, expected {expected}")
        for version, claim in claims.items():
            holder = (pkgs.get(claim.get("package")) or {}).get("status", {}).get("version")
            if holder != version:
                f.duplicated.append(f"model {model}: claim of version {version} names {claim.get('package')}, "
                                    f"which has version {holder}")
        stages = Counter((pkgs.get(n) or {}).get("status", {}).get("stage") for n in names)
        if stages["Production"] != 1:
            (f.duplicated if stages["Production"] > 1 else f.lost).append(
                f"model {model}: {stages['Production']} packages in Production ({dict(stages)})")
        for name in names:
            status, c_status = (pkgs.get(name) or {}).get("status") or {}, c_pkgs[name].get("status") or {}
            if status.get("stage") != c_status.get("stage"):
                f.wrong.append(f"ModelPackage/{name}: stage {status.get('stage')} vs control {c_status.get('stage')}")
    served = pkgs.get(work.served) or {}
    if condition(served, "Serving").get("status") != "True":
        f.lost.append(f"ModelPackage/{work.served}: not serving ({condition(served, 'Serving')})")

    for kind, reasons in TERMINAL_EVENTS.items():
        for name in work.names(kind):
            count = sum(got.events.get((kind, name), Counter())[r] for r in reasons)
            if count == 0:
                f.lost.append(f"{kind}/{name}: no {'/'.join(sorted(reasons))} event")
            elif count > 1:
                f.duplicated.append(f"{kind}/{name}: {count} {'/'.join(sorted(reasons))} events "
                                    f"({dict(sorted(got.events[(kind, name)].items()))})")
    return f


def operator_lines(log: str, findings: Findings, limit: int = 40) -> str:
    """The operator's log lines about the objects named in the findings, for the report."""
    names = set(re.findall(r"(?:Dataset|TrainingRun|ModelPackage)/([\w.-]+)", findings.text()))
    lines = [line for line in log.splitlines()
             if line.startswith("=====") or any(f"/{n}]" in line for n in names)]
    return "\n".join(lines[-limit:])


# -- the table ---------------------------------------------------------------------------------------------------

COLUMNS = ("scenario", "kills", "in flight", "fault events", "lost", "duplicated", "stuck", "wrong", "left", "retried", "seconds")


def table(rows: list[dict]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS), "  ".join("-" * widths[c] for c in COLUMNS)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)
