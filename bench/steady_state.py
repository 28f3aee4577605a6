"""Benchmark: what the operator costs at rest, and how fast it fans out (issue 12).

    .venv/bin/python bench/steady_state.py [--n 100 [1000]] [--window 30] [--fanout 200] [--rev HEAD]

For each N, on a fresh local stack with the operator as a separate process (local executor):
1. apply N Datasets (builtin iris/wine and small inline tables), N/5 TrainingRuns and N/10
   ModelPackages (stage None or Staging, none served), at most --max-in-flight unsettled at a time
   (each in-flight task is a Python process; 1000 at once would not fit in memory);
2. wait until every object settled (Ready / Succeeded / Packaged) and time it;
3. measure for --window seconds with nothing in flight: operator CPU and RSS from /proc, and the API
   server's request rate by verb and resource from its /metrics counters (which do not count the
   scrapes). The peer is the same stack before the operator started (its controller-manager).
Then (--fanout M) on another fresh stack: M TrainingRuns with the kubernetes executor applied at once,
until every Job exists, beside the same API server taking the operator's own Job manifests straight
from 20 client threads. CPU seconds per object are shown beside wall times: the machine is shared.
They cover every process a run costs (the bench's own apply, the operator, kube-apiserver, etcd, the
Job controller, S3), so cores / CPU per run is the most this machine could do if nothing else ran.
--rev runs the operator from one committed revision rather than the work tree others may be editing.
Prints tables. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NS = "bench"
GROUP_PATH = "/apis/mloop.dev/v1alpha1"
SETTLED = {"datasets": "Ready", "trainingruns": "Succeeded", "modelpackages": "Packaged"}
TARGETS = {"cpu": 2.0, "requests": 1.0, "rss": 400.0, "fanout": 150.0}
CLIENT_THREADS = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
METRIC_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')


# -- objects -----------------------------------------------------------------------------

def doc(kind: str, name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def dataset_spec(i: int) -> dict[str, Any]:
    """Every 4th iris, every 4th wine, the rest small inline tables (distinct rows, so distinct versions)."""
    if i % 4 == 0:
        return {"source": {"builtin": {"name": "iris"}}}
    if i % 4 == 1:
        return {"source": {"builtin": {"name": "wine"}}}
    rng = random.Random(i)
    rows = [[round(rng.uniform(0, 10), 3), round(rng.uniform(0, 10), 3), rng.randint(0, 100), rng.choice("ab")]
            for _ in range(24)]
    return {"source": {"inline": {"columns": ["x1", "x2", "count", "label"], "rows": rows}}}


def run_spec(j: int) -> tuple[str, dict[str, Any]]:
    """Runs 3k and 3k+1 share iris Dataset 8k; run 3k+2 uses wine Dataset 8k+1. Seeds differ: no cache hits."""
    dataset, target = (8 * (j // 3), "species") if j % 3 < 2 else (8 * (j // 3) + 1, "cultivar")
    return f"ds-{dataset:05d}", {
        "datasetRef": {"name": f"ds-{dataset:05d}"}, "target": target,
        "estimator": {"name": "LogisticRegression", "params": {"max_iter": 300, "C": [0.5, 1.0, 2.0][j % 3]}},
        "split": {"testFraction": 0.25, "seed": j},
    }


def workload(n: int) -> list[dict[str, Any]]:
    """Objects in apply order: each run right after its datasets, each package right after its run."""
    runs, packages = n // 5, n // 10
    datasets = {f"ds-{i:05d}": doc("Dataset", f"ds-{i:05d}", dataset_spec(i)) for i in range(n)}
    order: list[dict[str, Any]] = []

    def add_dataset(name: str) -> None:
        if name in datasets:
            order.append(datasets.pop(name))

    for j in range(runs):
        dataset, spec = run_spec(j)
        for i in range(int(dataset[3:]) + 1):
            add_dataset(f"ds-{i:05d}")
        order.append(doc("TrainingRun", f"run-{j:05d}", spec))
        if j % 2 == 0 and j // 2 < packages:
            k = j // 2
            order.append(doc("ModelPackage", f"pkg-{k:05d}", {
                "model": f"bench-model-{k % 5}", "trainingRunRef": {"name": f"run-{j:05d}"},
                "formats": ["skops"], "stage": "Staging" if k % 2 else "None"}))
    order.extend(datasets.values())
    return order


PLURAL = {"Dataset": "datasets", "TrainingRun": "trainingruns", "ModelPackage": "modelpackages"}


# -- clients and measurements ------------------------------------------------------------

def make_client(kubeconfig: str) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = CLIENT_THREADS + 8
    return client.ApiClient(cfg)


def raw_get(api: Any, path: str, query: list[tuple[str, str]] | None = None, accept: str = "application/json") -> bytes:
    resp = api.call_api(path, "GET", query_params=query or [], header_params={"Accept": accept},
                        _preload_content=False, _return_http_data_only=True)
    return resp.data


def phases(api: Any, plural: str, namespace: str = NS) -> dict[str, str]:
    """name -> phase from a Table LIST served from the watch cache: light enough to poll every second."""
    table = json.loads(raw_get(api, f"{GROUP_PATH}/namespaces/{namespace}/{plural}", [("resourceVersion", "0")],
                               "application/json;as=Table;v=v1;g=meta.k8s.io"))
    names = [c["name"] for c in table["columnDefinitions"]]
    col = names.index("Phase")
    return {row["cells"][0]: row["cells"][col] or "" for row in table.get("rows") or []}


def request_counts(api: Any) -> Counter[str]:
    """apiserver_request_total summed over codes and scopes, keyed 'VERB resource[/subresource]'."""
    counts: Counter[str] = Counter()
    for line in raw_get(api, "/metrics", accept="text/plain").decode().splitlines():
        match = METRIC_LINE.match(line)
        if not match:
            continue
        labels = dict(LABEL.findall(match["labels"]))
        if labels.get("resource"):
            resource = labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
        else:  # a non-resource path (discovery, /metrics) is kept in the subresource label
            resource = "/" + labels.get("subresource", "").lstrip("/")
        code = labels.get("code", "")
        failed = f" ({code})" if code and not code.startswith("2") else ""  # 409s show retried or duplicate creates
        counts[f"{labels.get('verb', '?')} {resource}{failed}"] += int(float(match["value"]))
    return counts


def counter_delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Window:
    seconds: float
    requests: Counter[str]
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, per process
    load: str = ""

    @property
    def rate(self) -> float:
        return sum(self.requests.values()) / self.seconds

    def top(self, k: int = 4) -> list[tuple[str, float]]:
        return [(key, count / self.seconds) for key, count in self.requests.most_common(k)]


def measure(api: Any, seconds: float, pids: dict[str, int]) -> Window:
    """Counter deltas over a quiet window; the bench itself makes no API call inside it but the two scrapes."""
    before_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    before = request_counts(api)
    started = time.monotonic()
    time.sleep(seconds)
    after = request_counts(api)
    elapsed = time.monotonic() - started
    after_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    # The API server does not count /metrics scrapes in apiserver_request_total (checked on 1.35).
    delta = counter_delta(after, before)
    cpu = {name: 100 * (after_cpu[name] - before_cpu[name]) / elapsed for name in pids}
    return Window(elapsed, delta, cpu, " ".join(f"{x:.2f}" for x in os.getloadavg()))


# -- the stack and the operator ------------------------------------------------------------

class Bench:
    """One local stack plus one operator process; close() leaves no process behind."""

    def __init__(self, root: Path, label: str, source: Path | None):
        from mloop.localcluster import LocalStack

        self.source = source
        self.work = root / label
        self.work.mkdir(parents=True)
        self.stack = LocalStack(directory=self.work / "stack")
        self.operator: subprocess.Popen[bytes] | None = None
        self.info: Any = None
        self.api: Any = None

    def start(self) -> None:
        from mloop.k8s.kubectl import kubectl

        self.info = self.stack.start()
        # From the operator's own source, which may be an exported revision (--rev).
        subprocess.run([sys.executable, "-c", "import sys; from mloop.k8s.crds import install_crds; "
                        "install_crds(sys.argv[1])", self.info.kubeconfig], env=self.env, check=True)
        self.api = make_client(self.info.kubeconfig)
        for namespace in (NS, "fanout", "raw"):
            kubectl("create", "namespace", namespace, kubeconfig=self.info.kubeconfig, check=True)
            kubectl("create", "secret", "generic", "mloop-s3", "-n", namespace,
                    f"--from-literal=AWS_ACCESS_KEY_ID={self.info.s3_access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={self.info.s3_secret_key}",
                    kubeconfig=self.info.kubeconfig, check=True)

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.info.env(), "MLOOP_EXECUTOR": "local", "MLOOP_LIVENESS_PORT": "0",
               "MLOOP_METRICS_PORT": "0", "MLOOP_LOCAL_DIR": str(self.work / "tasks")}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)  # ahead of the editable install's path entry
        return env

    def start_operator(self) -> None:
        log = open(self.work / "operator.log", "wb")  # noqa: SIM115 - handed to the child
        self.operator = subprocess.Popen([sys.executable, "-m", "mloop"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        time.sleep(3)  # kopf's start-up: the first objects then go through create handlers, not resume
        self.check_operator()

    def check_operator(self) -> None:
        assert self.operator is not None
        if self.operator.poll() is not None:
            tail = (self.work / "operator.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"the operator exited with {self.operator.returncode}:\n" + "\n".join(tail))

    def pids(self) -> dict[str, int]:
        assert self.operator is not None
        return {"operator": self.operator.pid, "kube-apiserver": self.stack.procs["kube-apiserver"].pid}

    def close(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, signal.SIGTERM)
            try:
                self.operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.operator.pid, signal.SIGKILL)
                self.operator.wait(timeout=10)
        # Local tasks run in sessions of their own; stop any still running (only after a timeout or error).
        for record in (self.work / "tasks").glob("*.json"):
            try:
                os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
        if self.api is not None:
            self.api.close()
        self.stack.stop()


# -- steady state ----------------------------------------------------------------------------

@dataclass
class SteadyResult:
    n: int
    objects: Counter[str]
    settle: float
    failed: list[str]
    baseline: Window
    rest: Window
    rss: float
    hwm: float
    anon: float  # RssAnon: VmRSS also counts shared-library pages, which the kernel drops under memory pressure
    max_in_flight: int
    settle_cpu: float  # operator CPU seconds while settling: its own cost, less dependent on the machine's load

    @property
    def total(self) -> int:
        return sum(self.objects.values())


def create_all(api: Any, docs: list[dict[str, Any]], pool: ThreadPoolExecutor) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)

    def create(d: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object("mloop.dev", "v1alpha1", d["metadata"]["namespace"],
                                               PLURAL[d["kind"]], d)

    list(pool.map(create, docs))


def settle(bench: Bench, docs: list[dict[str, Any]], max_in_flight: int, timeout: float,
           stall: float) -> tuple[float, list[str]]:
    """Apply in order, never more than max_in_flight unsettled; return (seconds until all settled, failed)."""
    pending = list(docs)
    applied = 0
    started = progressed = time.monotonic()
    last_done = 0
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        while True:
            bench.check_operator()
            seen = {(plural, name): phase for plural in SETTLED for name, phase in phases(bench.api, plural).items()}
            done = {key for key, phase in seen.items() if phase in (SETTLED[key[0]], "Failed")}
            if applied == len(docs) and len(done) >= len(docs):
                elapsed = time.monotonic() - started
                return elapsed, sorted(f"{p}/{n}" for (p, n) in done if seen[(p, n)] == "Failed")
            if len(done) != last_done:
                last_done, progressed = len(done), time.monotonic()
            elif time.monotonic() - progressed > stall:
                stuck = Counter(f"{p} {seen[(p, n)] or '(no phase)'}" for (p, n) in seen if (p, n) not in done)
                raise TimeoutError(f"nothing settled for {stall:.0f} s; unsettled: {dict(stuck)} (see operator.log)")
            room = max_in_flight - (applied - len(done))
            if room > 0 and pending:
                batch, pending = pending[:room], pending[room:]
                create_all(bench.api, batch, pool)
                applied += len(batch)
                continue
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(docs) - len(done)} of {len(docs)} objects not settled after {timeout:.0f} s")
            time.sleep(1.0)


def steady_state(root: Path, source: Path | None, n: int, window: float, max_in_flight: int,
                 grace: float, stall: float) -> SteadyResult:
    bench = Bench(root, f"steady-{n}", source)
    try:
        bench.start()
        baseline = measure(bench.api, min(window, 10.0), {"kube-apiserver": bench.stack.procs["kube-apiserver"].pid})
        bench.start_operator()
        docs = workload(n)
        objects = Counter(d["kind"] for d in docs)
        print(f"N={n}: applying {dict(objects)}, at most {max_in_flight} in flight", flush=True)
        cpu_before = cpu_seconds(bench.pids()["operator"])
        settle_time, failed = settle(bench, docs, max_in_flight, 600 + 6 * len(docs), stall)
        settle_cpu = cpu_seconds(bench.pids()["operator"]) - cpu_before
        print(f"N={n}: settled in {settle_time:.1f} s ({len(failed)} failed); quiet {grace:.0f} s, then measuring "
              f"{window:.0f} s", flush=True)
        time.sleep(grace)
        rest = measure(bench.api, window, bench.pids())
        bench.check_operator()
        pid = bench.pids()["operator"]
        return SteadyResult(n, objects, settle_time, failed, baseline, rest, memory_mb(pid, "VmRSS"),
                            memory_mb(pid, "VmHWM"), memory_mb(pid, "RssAnon"), max_in_flight, settle_cpu)
    finally:
        bench.close()


# -- fan-out -----------------------------------------------------------------------------------

@dataclass
class FanoutResult:
    runs: int
    apply: float
    jobs: float
    raw_jobs: int
    raw: float
    load: str
    cpu: dict[str, float]  # CPU seconds during each side: operator, bench client, kube-apiserver
    requests: Counter[str]  # API requests while the operator fanned out (all clients, the Job controller's too)
    raw_requests: Counter[str]


def job_count(api: Any, namespace: str) -> int:
    """One item plus remainingItemCount: a count without listing every Job."""
    page = json.loads(raw_get(api, f"/apis/batch/v1/namespaces/{namespace}/jobs", [("limit", "1")]))
    return len(page.get("items") or []) + int(page["metadata"].get("remainingItemCount") or 0)


def raw_creates(bench: Bench, count: int) -> float:
    """The operator's own Job manifest (builders.job), created straight from CLIENT_THREADS threads."""
    from kubernetes import client

    from mloop.builders.job import build_job
    from mloop.config import Settings
    from mloop.executors.base import Task

    settings = Settings(s3_endpoint=bench.info.s3_endpoint, bucket=bench.info.bucket)
    batch = client.BatchV1Api(bench.api)

    def manifest(i: int) -> dict[str, Any]:
        name = f"train-raw-{i:05d}"
        job = build_job(Task(name=name, namespace="raw", kind="train", command=["python", "-m", "mloop.workloads.train",
                                                                                f"tasks/raw/{name}/"],
                             prefix=f"tasks/raw/{name}/", owner={"apiVersion": "v1", "kind": "TrainingRun",
                                                                  "name": name, "uid": "0"}), settings)
        job["metadata"].pop("ownerReferences", None)  # no owner to point at; the GC would delete the Job
        return job

    jobs = [manifest(i) for i in range(count)]
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda job: batch.create_namespaced_job("raw", job), jobs))
    return time.monotonic() - started


STACK_PROCESSES = ("kube-apiserver", "etcd", "kube-controller-manager", "versitygw")


def process_cpu(bench: Bench) -> dict[str, float]:
    """CPU seconds so far of every process a run costs: the bench client's apply, the operator, the stack."""
    cpu = {"operator": cpu_seconds(bench.pids()["operator"]), "client": cpu_seconds(os.getpid())}
    return cpu | {name: cpu_seconds(bench.stack.procs[name].pid) for name in STACK_PROCESSES}


def cpu_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def profiler(pid: int) -> subprocess.Popen[bytes] | None:
    """With MLOOP_BENCH_PROFILE=<file>, py-spy samples the operator's threads while it fans out (speedscope)."""
    out = os.environ.get("MLOOP_BENCH_PROFILE")
    if not out:
        return None
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--nonblocking",
                            "--format", "speedscope", "-o", out, "-p", str(pid)])
    time.sleep(1)
    return spy


def apiserver_profiler(api: Any, seconds: int = 10) -> threading.Thread | None:
    """With MLOOP_BENCH_APISERVER_PROFILE=<file>, a Go CPU profile of kube-apiserver while the operator fans out
    (read it with `go tool pprof -top <file>`)."""
    out = os.environ.get("MLOOP_BENCH_APISERVER_PROFILE")  # fanout() then started the stack with /debug/pprof
    if not out:
        return None

    def grab() -> None:
        Path(out).write_bytes(raw_get(api, "/debug/pprof/profile", [("seconds", str(seconds))], "*/*"))

    thread = threading.Thread(target=grab, daemon=True)
    thread.start()
    return thread


def fanout(root: Path, source: Path | None, runs: int) -> FanoutResult:
    if os.environ.get("MLOOP_BENCH_APISERVER_PROFILE"):
        os.environ["MLOOP_APISERVER_PROFILING"] = "1"
    bench = Bench(root, "fanout", source)
    try:
        bench.start()
        bench.start_operator()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            create_all(bench.api, [doc("Dataset", "iris", {"source": {"builtin": {"name": "iris"}}}, "fanout")], pool)
        deadline = time.monotonic() + 300
        while phases(bench.api, "datasets", "fanout").get("iris") != "Ready":
            bench.check_operator()
            if time.monotonic() > deadline:
                raise TimeoutError("Dataset fanout/iris not Ready after 300 s")
            time.sleep(0.5)

        cpu0, counts0 = process_cpu(bench), request_counts(bench.api)
        raw = raw_creates(bench, runs)
        # Until the Jobs exist, as on the operator's side (whose window ends there too, most pods still to come).
        raw_cpu = cpu_delta(process_cpu(bench), cpu0)
        while sum(1 for _ in json.loads(raw_get(bench.api, "/api/v1/namespaces/raw/pods"))["items"]) < runs:
            time.sleep(0.5)  # let the Job controller finish the peer's pods before the operator's turn
        time.sleep(2)
        raw_requests = counter_delta(request_counts(bench.api), counts0)

        spec = {"datasetRef": {"name": "iris"}, "target": "species", "executor": "kubernetes",
                "estimator": {"name": "LogisticRegression", "params": {"max_iter": 300}},
                "split": {"testFraction": 0.25, "seed": 7}}
        docs = [doc("TrainingRun", f"fan-{i:05d}", spec, "fanout") for i in range(runs)]
        cpu0, counts0 = process_cpu(bench), request_counts(bench.api)
        spy = profiler(bench.pids()["operator"])
        pprof = apiserver_profiler(bench.api)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            create_all(bench.api, docs, pool)
        applied = time.monotonic() - started
        while job_count(bench.api, "fanout") < runs:
            bench.check_operator()
            if time.monotonic() - started > 900:
                raise TimeoutError(f"only {job_count(bench.api, 'fanout')} of {runs} Jobs after 900 s")
            time.sleep(0.1)
        jobs = time.monotonic() - started
        ours = cpu_delta(process_cpu(bench), cpu0)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        if pprof is not None:
            pprof.join(timeout=60)
        requests = counter_delta(request_counts(bench.api), counts0)
        return FanoutResult(runs, applied, jobs, runs, raw, " ".join(f"{x:.2f}" for x in os.getloadavg()),
                            {**{f"raw {k}": v for k, v in raw_cpu.items()}, **ours}, requests, raw_requests)
    finally:
        bench.close()


# -- report ------------------------------------------------------------------------------------

def steady_table(results: list[SteadyResult]) -> str:
    head = "| measure | " + " | ".join(f"N={r.n}" for r in results) + " | target at N=1000 |"
    rows = [head, "|---" * (len(results) + 2) + "|"]

    def row(name: str, cells: list[str], target: str = "-") -> None:
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    row("objects (Datasets / runs / packages)",
        [f"{r.objects['Dataset']} / {r.objects['TrainingRun']} / {r.objects['ModelPackage']}" for r in results])
    row("settling time, first apply -> all settled", [f"{r.settle:.1f} s" for r in results], "linear in N")
    row("settling time per object", [f"{1000 * r.settle / r.total:.0f} ms" for r in results], "flat in N")
    row("operator CPU while settling, per object", [f"{1000 * r.settle_cpu / r.total:.0f} ms" for r in results],
        "flat in N")
    row("objects that ended Failed", [str(len(r.failed)) for r in results], "0")
    row("operator CPU at rest", [f"{r.rest.cpu['operator']:.2f}% of a core" for r in results],
        f"< {TARGETS['cpu']:.0f}%")
    row("API requests/s at rest (all clients)", [f"{r.rest.rate:.2f}" for r in results],
        f"< {TARGETS['requests']:.0f}")
    row("peer: API requests/s, same stack before the operator started", [f"{r.baseline.rate:.2f}" for r in results])
    row("of which not the stack's own (difference)", [f"{r.rest.rate - r.baseline.rate:.2f}" for r in results])
    for k in range(4):
        cells = []
        for r in results:
            top = r.rest.top()
            cells.append(f"{top[k][0]} {top[k][1]:.2f}" if k < len(top) else "-")
        row(f"top {k + 1}: verb resource, req/s", cells)
    row("kube-apiserver CPU at rest", [f"{r.rest.cpu['kube-apiserver']:.1f}% (alone: "
                                       f"{r.baseline.cpu['kube-apiserver']:.1f}%)" for r in results])
    row("operator RSS at rest (peak; anonymous)", [f"{r.rss:.0f} MB ({r.hwm:.0f}; {r.anon:.0f} MB)" for r in results],
        f"< {TARGETS['rss']:.0f} MB")
    row("load average 1/5/15 min, end of window", [r.rest.load for r in results], "(2 cores, shared)")
    row("in flight at most while applying", [str(r.max_in_flight) for r in results])
    return "\n".join(rows)


def fanout_table(r: FanoutResult) -> str:
    ours, peer = r.runs / r.jobs, r.raw_jobs / r.raw
    others = ("etcd", "kube-controller-manager", "versitygw")
    total = sum(r.cpu[k] for k in ("operator", "client", "kube-apiserver", *others))
    raw_total = sum(r.cpu[f"raw {k}"] for k in ("client", "kube-apiserver", *others))
    cores = os.cpu_count() or 1
    return "\n".join([
        "| measure | mloop | peer: the same Jobs from 20 client threads | ratio | target |",
        "|---|---|---|---|---|",
        f"| {r.runs} TrainingRuns applied at once (kubernetes executor): every Job exists | {r.jobs:.1f} s, "
        f"{ours:.1f} runs/s | {r.raw_jobs} Jobs in {r.raw:.1f} s, {peer:.0f} Jobs/s | {ours / peer:.2f} | "
        f">= {TARGETS['fanout']:.0f} runs/s |",
        f"| applying the {r.runs} TrainingRuns (20 threads; the operator already at work): a bound on the row "
        f"above | {r.apply:.1f} s, "
        f"{r.runs / r.apply:.0f} runs/s | - | - | - |",
        f"| operator CPU per run | {1000 * r.cpu['operator'] / r.runs:.1f} ms | - | - | - |",
        f"| bench client CPU per run (its apply) / per Job | {1000 * r.cpu['client'] / r.runs:.1f} ms | "
        f"{1000 * r.cpu['raw client'] / r.raw_jobs:.1f} ms | - | - |",
        f"| kube-apiserver CPU per run / per Job | {1000 * r.cpu['kube-apiserver'] / r.runs:.1f} ms | "
        f"{1000 * r.cpu['raw kube-apiserver'] / r.raw_jobs:.1f} ms | - | - |",
        f"| etcd / kube-controller-manager / versitygw CPU per run / per Job | "
        f"{' / '.join(f'{1000 * r.cpu[k] / r.runs:.1f}' for k in others)} ms | "
        f"{' / '.join(f'{1000 * v / r.raw_jobs:.1f}' for v in (r.cpu['raw ' + k] for k in others))} ms | - | - |",
        f"| CPU per run / per Job, all these processes | {1000 * total / r.runs:.0f} ms | "
        f"{1000 * raw_total / r.raw_jobs:.0f} ms | - | - |",
        f"| ceiling if CPU-bound: {cores} cores / CPU per run | {cores * r.runs / total:.0f} runs/s | "
        f"{cores * r.raw_jobs / raw_total:.0f} Jobs/s | - | - |",
        f"| API requests per run / per Job (all clients; the peer's counted until its pods exist) | "
        f"{sum(r.requests.values()) / r.runs:.1f} | "
        f"{sum(r.raw_requests.values()) / r.raw_jobs:.1f} | - | - |",
        f"| requests per run / per Job | {per_item(r.requests, r.runs, 20)} | "
        f"{per_item(r.raw_requests, r.raw_jobs, 20)} | - | - |",
        f"| load average 1/5/15 min, end | {r.load} | - | - | - |",
    ])


def per_item(counts: Counter[str], items: int, k: int = 5) -> str:
    return ", ".join(f"{key} {count / items:.2f}" for key, count in counts.most_common(k))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def operator_source(rev: str | None, root: Path) -> tuple[Path | None, str]:
    """The operator code under test: the work tree, or one revision exported (others may be editing the tree)."""
    if rev is None:
        dirty = git("status", "--porcelain", "--", "operator")
        return None, f"work tree at {git('rev-parse', '--short', 'HEAD')}" + (
            " plus uncommitted changes in operator/" if dirty else "")
    out = root / "src"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "operator"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "operator", f"revision {git('rev-parse', '--short', rev)} ({rev}), exported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="*", default=[100], help="Datasets per run of the bench (default 100)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured at rest")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between settling and measuring")
    parser.add_argument("--max-in-flight", type=int, default=12, help="unsettled objects at most while applying")
    parser.add_argument("--stall", type=float, default=300.0, help="give up when nothing settles for this long")
    parser.add_argument("--fanout", type=int, default=0, help="TrainingRuns applied at once (0: skip)")
    parser.add_argument("--rev", help="run the operator from this git revision (e.g. HEAD), not the work tree")
    parser.add_argument("--source", type=Path, help="run the operator from this source tree (its operator/ folder)")
    args = parser.parse_args()
    # `kill` or a background job (which ignores SIGINT) must still reach the finally clauses that stop the stacks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    root = Path(tempfile.mkdtemp(prefix="mloop-bench-steady-"))
    if args.source:
        source, described = args.source.resolve() / "operator", f"folder {args.source}"
    else:
        source, described = operator_source(args.rev, root)
    print(f"operator code: {described}", flush=True)
    results: list[SteadyResult] = []
    fan: FanoutResult | None = None
    try:
        if args.fanout:  # first: minutes, where a large N takes most of an hour
            fan = fanout(root, source, args.fanout)
            print(f"\nFan-out (operator: {described})\n\n{fanout_table(fan)}\n", flush=True)
        for n in args.n:
            results.append(steady_state(root, source, n, args.window, args.max_in_flight, args.grace, args.stall))
            if len(args.n) > 1 or args.fanout:  # a long bench shows what it has so far
                print(steady_table(results), flush=True)
    except BaseException:
        print(f"logs kept in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    if results:
        print(f"\nSteady state ({os.cpu_count()} cores; window {args.window:.0f} s; operator: {described})\n")
        print(steady_table(results))
        for r in results:
            every = ", ".join(f"{key} {count}" for key, count in r.rest.requests.most_common())
            print(f"N={r.n}: every request in the {r.rest.seconds:.0f} s window: {every or 'none'}")
            if r.failed:
                print(f"N={r.n}: failed: {', '.join(r.failed[:10])}")
    if fan is not None:
        print(f"\nFan-out (operator: {described})\n\n{fanout_table(fan)}")


if __name__ == "__main__":
    main()
