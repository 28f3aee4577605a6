"""Start and stop the local control plane and S3 server as child processes on loopback."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from mloop.localcluster.binaries import Binaries, find_binaries
from mloop.localcluster.certs import CertFiles, generate
from mloop.procs import alive as _alive, free_port, wait_gone  # noqa: F401 - tests import _alive from here

DEFAULT_BUCKET = "mloop"
REGION = "us-east-1"


class StackError(RuntimeError):
    pass


@dataclass
class StackInfo:
    """Everything a client needs to reach a running stack; saved as state.json for `mloop dev`."""

    directory: str
    kubeconfig: str
    api_server: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    bucket: str
    pids: dict[str, int]
    node: str = ""  # the node binaries' folder when the stack runs a real node (node.py), else ""

    def env(self) -> dict[str, str]:
        """MLOOP_* settings and standard variables that point kubectl, boto3 and the operator here."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "MLOOP_S3_ENDPOINT": self.s3_endpoint,
            "MLOOP_S3_REGION": REGION,
            "MLOOP_BUCKET": self.bucket,
            "MLOOP_S3_ACCESS_KEY": self.s3_access_key,
            "MLOOP_S3_SECRET_KEY": self.s3_secret_key,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> StackInfo:
        return cls(**json.loads(path.read_text()))


def _wait(what: str, check: Callable[[], bool], timeout: float, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = _tail(logs / f"{name}.log")
                raise StackError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{tail}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 - loopback only
        return resp.status == 200


class LocalStack:
    """etcd + kube-apiserver + kube-controller-manager (Job, GC and namespace controllers) + versitygw.

    Ports are chosen at run time, so several stacks can run side by side.
    """

    def __init__(self, directory: Path | None = None, binaries: Binaries | None = None, bucket: str = DEFAULT_BUCKET,
                 node: bool = False, detached: bool = False):
        """node=True adds a real node (node.py): pods then reach S3 and the API server at the bridge's gateway,
        so those two listen there instead of on 127.0.0.1. detached=True: the stack outlives the process that
        starts it (`mloop dev up`); otherwise a later node start reaps it once that process is gone."""
        self._owns_dir = directory is None
        self.node = node
        self.detached = detached
        self._node_bindir: Path | None = None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="mloop-stack-"))
        self.binaries = binaries or find_binaries()
        self.bucket = bucket
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, tuple[list[str], dict[str, str] | None]] = {}  # how each was started, for restarts
        self.info: StackInfo | None = None
        self._certs: CertFiles | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> StackInfo:
        self.dir.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        host = "127.0.0.1"
        if self.node:
            from mloop.localcluster import node as localnode

            localnode.preflight(self.dir)
            self._node_bindir = localnode.binaries_dir()
        try:
            if self.node:
                localnode.claim(self.dir, self.detached, self._owns_dir)
                localnode.network_up(self.dir)
                host = localnode.GATEWAY
            self._certs = generate(self.dir / "pki")
            etcd_port, etcd_peer, api_port, s3_port = free_port(), free_port(), free_port(), free_port()
            access_key, secret_key = "mloop" + secrets.token_hex(6), secrets.token_urlsafe(24)

            self._spawn("etcd", [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ])
            s3_root, s3_meta = self.dir / "s3" / "data", self.dir / "s3" / "meta"
            s3_root.mkdir(parents=True, exist_ok=True)
            s3_meta.mkdir(parents=True, exist_ok=True)
            # The sidecar keeps metadata in files, so the data folder needs no xattr support.
            self._spawn(
                "versitygw",
                [str(self.binaries.versitygw), "--port", f"{host}:{s3_port}", "--region", REGION, "--quiet",
                 "posix", "--sidecar", str(s3_meta), str(s3_root)],
                env={"ROOT_ACCESS_KEY": access_key, "ROOT_SECRET_KEY": secret_key},
            )
            _wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"), timeout, self.procs, logs)

            c = self._certs
            self._spawn("kube-apiserver", [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={host}",
                f"--advertise-address={host}",
                f"--secure-port={api_port}",
                f"--cert-dir={self.dir / 'pki'}",
                f"--tls-cert-file={c.serving_cert}",
                f"--tls-private-key-file={c.serving_key}",
                f"--client-ca-file={c.ca_cert}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={c.sa_public}",
                f"--service-account-signing-key-file={c.sa_private}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # /debug/pprof only when a benchmark asks for it (bench/steady_state.py's API server profile)
                f"--profiling={'true' if os.environ.get('MLOOP_APISERVER_PROFILING') == '1' else 'false'}",
                # With a node, real pods get ServiceAccount tokens and reach the API server through the
                # `kubernetes` Service; without one, as envtest does: pods must not wait for SA tokens.
                *(["--endpoint-reconciler-type=lease"] if self.node else
                  ["--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]),
            ])
            kubeconfig = self._write_kubeconfig(api_port, host)
            ctx = self._client_ssl()
            api = f"https://{host}:{api_port}"
            _wait("kube-apiserver /readyz", lambda: _http_ok(f"{api}/readyz", ctx), timeout, self.procs, logs)

            self._spawn("kube-controller-manager", [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                "--controllers=job-controller,garbage-collector-controller,clusterrole-aggregation-controller,"
                "namespace-controller"
                + (",node-lifecycle-controller,deployment-controller,replicaset-controller,endpointslice-controller,"
                   "endpointslice-mirroring-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,"
                   "pod-garbage-collector-controller" if self.node else ""),
                *([f"--root-ca-file={c.ca_cert}"] if self.node else []),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--concurrent-job-syncs=10",
            ])
            self.info = StackInfo(
                directory=str(self.dir),
                kubeconfig=str(kubeconfig),
                api_server=api,
                s3_endpoint=f"http://{host}:{s3_port}",
                s3_access_key=access_key,
                s3_secret_key=secret_key,
                bucket=self.bucket,
                pids={name: proc.pid for name, proc in self.procs.items()},
                node=str(self._node_bindir or ""),
            )
            _wait("S3 bucket", self._ensure_bucket, timeout, self.procs, logs)
            if self.node:
                self._start_node(kubeconfig, timeout)
                self.info.pids = {name: proc.pid for name, proc in self.procs.items()}
            self.info.save(self.dir / "state.json")
            return self.info
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process (newest first) and leave none behind; with a node, its pods go first and its
        network, mounts and iptables rules last."""
        if self.node and self.info is not None and "kubelet" in self.procs:
            from mloop.localcluster import node as localnode

            localnode.drain(Path(self.info.kubeconfig))
        stop_processes({name: proc.pid for name, proc in self.procs.items()}, timeout)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if self.node:
            from mloop.localcluster import node as localnode

            localnode.teardown(self.dir, self._node_bindir)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- S3 server control, for outage tests -------------------------------------

    def stop_s3(self) -> None:
        proc = self.procs.pop("versitygw")
        stop_processes({"versitygw": proc.pid})
        proc.wait(timeout=5)

    def start_s3(self) -> None:
        assert self.info is not None
        address = self.info.s3_endpoint.removeprefix("http://")
        self._spawn(
            "versitygw",
            [str(self.binaries.versitygw), "--port", address, "--region", REGION, "--quiet",
             "posix", "--sidecar", str(self.dir / "s3" / "meta"), str(self.dir / "s3" / "data")],
            env={"ROOT_ACCESS_KEY": self.info.s3_access_key, "ROOT_SECRET_KEY": self.info.s3_secret_key},
        )
        _wait("S3 server", self._ensure_bucket, 30, self.procs, self.dir / "logs")

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port, certificates and etcd data."""
        assert self.info is not None
        proc = self.procs.pop("kube-apiserver")
        stop_processes({"kube-apiserver": proc.pid})
        proc.wait(timeout=5)
        self._spawn("kube-apiserver", *self._argv["kube-apiserver"])
        self.info.pids["kube-apiserver"] = self.procs["kube-apiserver"].pid
        ctx = self._client_ssl()
        _wait("kube-apiserver /readyz", lambda: _http_ok(f"{self.info.api_server}/readyz", ctx), 120, self.procs,
              self.dir / "logs")

    # -- the real node (node.py) ---------------------------------------------------

    def _start_node(self, kubeconfig: Path, timeout: float) -> None:
        from kubernetes import config

        from mloop.localcluster import images, node as localnode

        assert self._node_bindir is not None
        paths = localnode.NodePaths(self.dir / "node")
        argv = localnode.write_configs(paths, self._node_bindir, kubeconfig)
        logs = self.dir / "logs"
        self._spawn("containerd", argv["containerd"])
        _wait("containerd", lambda: localnode.ctr_ready(paths), timeout, self.procs, logs)
        images.import_archive(str(paths.sock), images.busybox_archive(paths.images / "pause.tar"),
                              localnode.snapshotter())
        for name in ("kube-scheduler", "kubelet", "kube-proxy"):
            self._spawn(name, argv[name])
        api = config.new_client_from_config(config_file=str(kubeconfig))
        _wait("node Ready and untainted", lambda: localnode.node_ready(api), max(timeout, 180), self.procs, logs)

    def import_image(self, archive: Path) -> None:
        """Load an image archive into the node's containerd, so pods run it with IfNotPresent and never pull."""
        from mloop.localcluster import images, node as localnode

        images.import_archive(str(localnode.NodePaths(self.dir / "node").sock), archive, localnode.snapshotter())

    def tag_image(self, source: str, target: str) -> None:
        """Another name for an imported image; a short name means docker.io/library/, as the kubelet reads it."""
        from mloop.localcluster import images, node as localnode

        if "/" not in target.split(":", 1)[0]:
            target = f"docker.io/library/{target}"
        images.tag_image(str(localnode.NodePaths(self.dir / "node").sock), source, target)

    # -- helpers -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._argv[name] = (argv, env)
        log = open(self.dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        # A session of its own: Ctrl-C in a terminal reaches the CLI, which stops the stack in order.
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True, cwd=self.dir,
        )
        log.close()

    def _client_ssl(self) -> ssl.SSLContext:
        assert self._certs is not None
        ctx = ssl.create_default_context(cafile=str(self._certs.ca_cert))
        ctx.load_cert_chain(str(self._certs.admin_cert), str(self._certs.admin_key))
        return ctx

    def _write_kubeconfig(self, port: int, host: str = "127.0.0.1") -> Path:
        assert self._certs is not None
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mloop-local", "cluster": {
                "server": f"https://{host}:{port}",
                "certificate-authority-data": b64(self._certs.ca_cert),
            }}],
            "users": [{"name": "mloop-admin", "user": {
                "client-certificate-data": b64(self._certs.admin_cert),
                "client-key-data": b64(self._certs.admin_key),
            }}],
            "contexts": [{"name": "mloop-local", "context": {"cluster": "mloop-local", "user": "mloop-admin"}}],
            "current-context": "mloop-local",
        }
        path = self.dir / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _ensure_bucket(self) -> bool:
        assert self.info is not None
        from mloop.storage.s3 import make_client

        from botocore.exceptions import EndpointConnectionError

        client = make_client(self.info.s3_endpoint, self.info.s3_access_key, self.info.s3_secret_key, REGION)
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        except EndpointConnectionError:  # not listening yet (a loaded machine): _wait asks again
            return False
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)
        return True


def stop_processes(pids: dict[str, int], timeout: float = 15.0) -> None:
    """Stop process groups newest first: kube-apiserver stalls for seconds when etcd goes before it."""
    for pid in reversed(list(pids.values())):
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
        if not wait_gone(pid, timeout):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
