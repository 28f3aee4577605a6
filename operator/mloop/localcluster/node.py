"""A real node for the test bed: containerd + runc + bridge CNI + kubelet + kube-proxy, no Docker.

Every fact here was checked on the project's machines (see TESTBED-NOTES, "A real node without Docker").
Network safety is a hard rule: no pod or service traffic may leave the machine, so there is no masquerade,
forwarding from the bridge to any other interface is dropped, the service range is routed onto the bridge,
and nothing but the bridge (and loopback) may reach the bridge's gateway address.

One node per machine: the bridge, kubelet port 10250 and the kubelet's cgroups are machine-wide.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mloop.localcluster.binaries import BUILD_SCRIPT

BRIDGE = "mloop0"
GATEWAY = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.0.0.0/24"
NODE_NAME = "localhost"
CNI_BIN = Path("/usr/lib/cni")
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "runc")
# The rules this module adds, exactly as `iptables -C/-D` take them.
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]
# FORWARD_RULE is also put in the mangle table, which runs before filter: kube-proxy puts its jumps (whose
# KUBE-FORWARD accepts service traffic it marked) above ours in filter's FORWARD.
# Only pods and this machine itself may reach the gateway's servers (the host's own traffic comes from a local address).
INPUT_RULE = ["INPUT", "-d", CLUSTER_CIDR, "!", "-i", BRIDGE, "-m", "addrtype", "!", "--src-type", "LOCAL",
              "-j", "DROP"]


def snapshotter() -> str:
    """overlayfs where the kernel mounts overlay (MLOOP_NODE_SNAPSHOTTER overrides): native copies the whole image
    (1.4 GB for mloop's) for every container, 70 s per pod on a loaded machine; overlayfs started it in under 5 s."""
    if value := os.environ.get("MLOOP_NODE_SNAPSHOTTER"):
        return value
    try:
        return "overlayfs" if "\toverlay\n" in Path("/proc/filesystems").read_text() else "native"
    except OSError:
        return "native"


class NodeUnavailable(RuntimeError):
    """The machine cannot run the node; the message says what is missing."""


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def sock(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.containerd / "runc"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni(self) -> Path:
        return self.root / "cni"

    @property
    def images(self) -> Path:
        return self.root / "images"


def binaries_dir() -> Path:
    """The cache folder build-binaries.sh prints (the node's binaries are built beside the control plane's)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), "node"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeUnavailable(f"building the node's binaries failed: {proc.stderr.strip()[-500:]}\n"
                              "run `make node-binaries` (needs Debian's libseccomp-dev and pkg-config for runc)")
    return Path(proc.stdout.strip().splitlines()[-1])


def _longest_sockets(directory: Path) -> list[tuple[Path, int]]:
    """The longest unix socket paths a node in this stack folder uses, and the most each daemon takes (sun_path is
    108 bytes; containerd allows 104 and adds ".ttrpc" to its socket's name)."""
    paths = NodePaths(directory / "node")
    return [(paths.sock.with_name(paths.sock.name + ".ttrpc"), 104),
            (paths.kubelet / "device-plugins" / "kubelet.sock", 107)]


def preflight(directory: Path | None = None) -> None:
    """Say everything that is missing at once: root, Debian packages, kernel features, and (given the stack's
    folder) room for the node's unix sockets."""
    missing: list[str] = []
    for path, most in _longest_sockets(directory) if directory is not None else ():
        if len(str(path)) > most:
            missing.append(f"a shorter stack folder than {directory} ({path} is {len(str(path))} characters, over "
                           f"the {most} a unix socket path may have here; MLOOP_DEV_DIR sets it)")
            break
    if os.geteuid() != 0:
        missing.append("root (the node creates a bridge, iptables rules, mounts and cgroups)")
    for cmd, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("iptables", "iptables"),
                     ("ip", "iproute2"), ("pkg-config", "pkg-config")):
        if shutil.which(cmd) is None:
            missing.append(f"{cmd} (Debian: {pkg})")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN / plugin).is_file():
            missing.append(f"{CNI_BIN / plugin} (Debian: containernetworking-plugins)")
            break
    if not Path("/bin/busybox").is_file():
        missing.append("/bin/busybox (Debian: busybox-static)")
    if missing:
        raise NodeUnavailable("the test-bed node (--node) needs: " + "; ".join(missing)
                              + ". As root, `make node-deps` installs the packages.")
    owner = _bridge_owner()
    if owner is not None and not reap_if_dead(Path(owner)):
        raise NodeUnavailable(f"a test-bed node is already running on this machine (bridge {BRIDGE}, stack {owner}); "
                              "stop it first (`mloop dev down` with its MLOOP_DEV_DIR)")


OWNER_FILE = "node-owner.json"
# What a stack starts, in the order to stop them (newest first: kube-apiserver stalls when etcd goes first).
STACK_PROGRAMS = ("kube-proxy", "kubelet", "kube-scheduler", "containerd", "kube-controller-manager",
                  "kube-apiserver", "versitygw", "etcd")


def _start_time(pid: int) -> str:
    """The process's start (clock ticks since boot): with the pid, it names one process, not a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def claim(directory: Path, detached: bool, owns_dir: bool) -> None:
    """Written before the bridge exists, so the next start can tell a dead stack from a live one. A stack held by a
    process (a test run) dies with it; a detached one (`mloop dev up`) lives until one of its processes is gone."""
    pid = os.getpid()
    directory.joinpath(OWNER_FILE).write_text(json.dumps(
        {"pid": pid, "start": _start_time(pid), "detached": detached, "owns_dir": owns_dir}))


def _stack_dead(directory: Path) -> bool:
    try:
        owner = json.loads(directory.joinpath(OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = {}
    holder = int(owner.get("pid", 0) or 0)
    if holder and _start_time(holder) == owner.get("start"):
        return False  # its test run or `dev up` is still there (perhaps still starting it)
    if owner and not owner.get("detached"):
        return True
    try:  # detached, or written by an older mloop: dead once any of its processes is
        pids = json.loads(directory.joinpath("state.json").read_text())["pids"]
    except (OSError, ValueError, KeyError):
        return True
    return any(not Path(f"/proc/{pid}").is_dir() for name, pid in pids.items() if name != "operator")


def _stack_processes(directory: Path) -> dict[str, list[int]]:
    """Our programs whose command line names a path under `directory`, by program; nothing else is touched."""
    prefix = str(directory) + "/"
    found: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        name = os.path.basename(argv[0])
        if name in STACK_PROGRAMS and any(prefix in arg for arg in argv[1:]):
            found.setdefault(name, []).append(int(proc.name))
    return found


def reap_if_dead(directory: Path) -> bool:
    """Tear down the node of a stack whose owner is gone (a killed test run leaves kubelet on 127.0.0.1:10250 and the
    bridge, and the next start fails). True when nothing of it is left; False when it is alive and must stay.
    Only processes of our programs whose command line is under that stack's folder are stopped."""
    if not directory.is_absolute() or directory == Path("/") or not _stack_dead(directory):
        return False
    procs = _stack_processes(directory)
    if procs.get("kubelet") and procs.get("kube-apiserver") and directory.joinpath("kubeconfig").is_file():
        drain(directory / "kubeconfig", timeout=60)  # its pods end cleanly while its kubelet still runs
    for name in STACK_PROGRAMS:
        for pid in procs.get(name, []):
            _terminate(pid)
    bindir: Path | None = None
    try:
        bindir = Path(json.loads(directory.joinpath("state.json").read_text())["node"]) or None
    except (OSError, ValueError, KeyError):
        pass
    teardown(directory, bindir)
    try:
        owns_dir = json.loads(directory.joinpath(OWNER_FILE).read_text()).get("owns_dir")
    except (OSError, ValueError):
        owns_dir = False
    if owns_dir:  # a test run's temporary folder: the node's images alone are gigabytes
        shutil.rmtree(directory, ignore_errors=True)
    return _bridge_owner() is None


def _terminate(pid: int, timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state in ("Z", "X"):
                return
            time.sleep(0.1)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NodeUnavailable(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def _bridge_owner() -> str | None:
    proc = _run("ip", "-j", "-d", "link", "show", BRIDGE, check=False)
    if proc.returncode != 0:
        return None
    links = json.loads(proc.stdout or "[]")
    return (links[0].get("ifalias") if links else None) or "unknown"


def network_up(directory: Path) -> None:
    """The bridge with the gateway address, the service route and the drop rules, before any server binds to it."""
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "link", "set", BRIDGE, "alias", str(directory))  # who owns it, for the next preflight
    _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # A VIP that kube-proxy did not translate must not go out through the default route.
    _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE)
    for table_rule in (FORWARD_RULE, INPUT_RULE):
        _run("iptables", "-I", *table_rule)
    _run("iptables", "-t", "mangle", "-I", *FORWARD_RULE)
    # A pod reaching a Service whose endpoint is another pod is routed back onto the bridge by the host. Forwarding
    # is switched on for packets that arrive on the bridge only (ip_forward stays 0; the drops above keep them on
    # it); the setting goes with the bridge. Without it the operator's pod never reached the S3 Service.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1")


def network_down() -> None:
    for table, table_rule in (("filter", FORWARD_RULE), ("filter", INPUT_RULE), ("mangle", FORWARD_RULE)):
        while _run("iptables", "-t", table, "-C", *table_rule, check=False).returncode == 0:
            _run("iptables", "-t", table, "-D", *table_rule, check=False)
    _run("ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE, check=False)
    _run("ip", "link", "del", BRIDGE, check=False)


def write_configs(paths: NodePaths, bindir: Path, kubeconfig: Path) -> dict[str, list[str]]:
    """containerd, CNI, kubelet and kube-proxy configuration; returns each process's argv in start order."""
    for d in (paths.containerd, paths.kubelet, paths.cni / "net.d", paths.images, paths.root / "pod-logs"):
        d.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    paths.containerd.joinpath("config.toml").write_text(f"""version = 2
root = "{paths.containerd / 'root'}"
state = "{paths.containerd / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{paths.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.containerd / 'opt'}"
[{cri}]
  sandbox_image = "localhost/mloop-pause:1"
  # Root here lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "{snapshotter()}"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{bindir / 'runc'}"
  Root = "{paths.runc_root}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{paths.cni / 'net.d'}"
""")
    # isGateway false: the bridge already has the gateway address, and the plugin would turn on ip_forward.
    paths.cni.joinpath("net.d", "10-mloop.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": "mloop",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(paths.cni / "ipam"),
                     "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                     "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}]},
        }],
    }, indent=2))
    paths.kubelet.joinpath("config.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this kernel mounts cgroup v1
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{paths.sock}",
        # A test bed on loopback: the API server reaches the kubelet at localhost:10250 without credentials.
        "address": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "resolvConf": "",
        "podLogsDir": str(paths.root / "pod-logs"),
        "serializeImagePulls": False,
        "syncFrequency": "10s",
    }, indent=2))
    kcfg = str(kubeconfig)
    return {
        "containerd": ["containerd", "--config", str(paths.containerd / "config.toml")],
        "kube-scheduler": [str(bindir / "kube-scheduler"), f"--kubeconfig={kcfg}", "--leader-elect=false",
                           "--bind-address=127.0.0.1", "--secure-port=0"],
        "kubelet": [str(bindir / "kubelet"), f"--config={paths.kubelet / 'config.yaml'}", f"--kubeconfig={kcfg}",
                    f"--root-dir={paths.kubelet}", f"--hostname-override={NODE_NAME}", "--v=1"],
        "kube-proxy": [str(bindir / "kube-proxy"), f"--kubeconfig={kcfg}", f"--hostname-override={NODE_NAME}",
                       "--proxy-mode=iptables", f"--cluster-cidr={CLUSTER_CIDR}", "--bind-address=127.0.0.1",
                       "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
                       f"--nodeport-addresses={GATEWAY}/32", "--iptables-localhost-nodeports=false",
                       # Leave the machine's conntrack settings alone.
                       "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                       "--conntrack-tcp-timeout-close-wait=0"],
    }


def ctr_ready(paths: NodePaths) -> bool:
    return paths.sock.exists() and _run("ctr", "--address", str(paths.sock), "version", check=False).returncode == 0


def node_ready(api: Any) -> bool:
    """Registered, Ready, and without the not-ready taint the node-lifecycle controller removes."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        node = client.CoreV1Api(api).read_node(NODE_NAME)
    except ApiException:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    tainted = any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])
    return ready and not tainted


def drain(kubeconfig: Path, timeout: float = 90.0) -> None:
    """Delete every workload and wait until the kubelet has ended its pods: a pod still terminating when the
    kubelet stops leaves a shim, a veth and a network namespace behind."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        apps, batch, core = client.AppsV1Api(api), client.BatchV1Api(api), client.CoreV1Api(api)
        for ns in core.list_namespace(_request_timeout=5).items:
            name = ns.metadata.name
            for delete in (apps.delete_collection_namespaced_deployment, apps.delete_collection_namespaced_replica_set,
                           apps.delete_collection_namespaced_stateful_set,
                           apps.delete_collection_namespaced_daemon_set, batch.delete_collection_namespaced_job):
                delete(name, propagation_policy="Orphan", _request_timeout=10)
            core.delete_collection_namespaced_pod(name, grace_period_seconds=1, _request_timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not [p for p in core.list_pod_for_all_namespaces(_request_timeout=5).items
                    if p.spec.node_name == NODE_NAME]:
                return
            time.sleep(0.5)
    except (ApiException, OSError, Exception):  # noqa: BLE001 - a dead API server: teardown cleans up by force
        return


def teardown(directory: Path, bindir: Path | None) -> None:
    """After the processes are stopped: iptables chains, leftover containers and shims, mounts, bridge, cgroups.
    Safe to run twice and on a half-started node."""
    paths = NodePaths(directory / "node")
    if bindir is not None and (bindir / "kube-proxy").is_file():
        _run(str(bindir / "kube-proxy"), "--cleanup", check=False)
    _remove_kube_chains()
    runc = str(bindir / "runc") if bindir is not None and (bindir / "runc").is_file() else "runc"
    if paths.runc_root.is_dir():
        for ns_root in [paths.runc_root, *[p for p in paths.runc_root.iterdir() if p.is_dir()]]:
            listed = _run(runc, "--root", str(ns_root), "list", "-q", check=False)
            for cid in listed.stdout.split() if listed.returncode == 0 else []:
                _run(runc, "--root", str(ns_root), "delete", "-f", cid, check=False)
    _kill_shims(paths.sock)
    _unmount_under(directory)
    network_down()
    _remove_cgroups()


def _remove_kube_chains() -> None:
    """kube-proxy --cleanup leaves the kubelet's KUBE-FIREWALL and KUBE-KUBELET-CANARY chains (and jumps to them)."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listed = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            chains = [line.split()[1] for line in listed if line.startswith("-N KUBE-")]
            for line in listed:
                parts = line.split()
                if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in chains \
                        and parts[1] not in chains:
                    _run(tool, "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                _run(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(tool, "-t", table, "-X", chain, check=False)


def _kill_shims(sock: Path) -> None:
    """containerd-shim processes of this node's containerd (they outlive it by design)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and str(sock).encode() in argv:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _unmount_under(directory: Path) -> None:
    prefix = str(directory.resolve()) + "/"
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                mounts.append(point)
        if not mounts:
            return
        for point in sorted(set(mounts), key=len, reverse=True):
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)


def _remove_cgroups() -> None:
    """The kubelet's kubepods tree (empty once its pods are gone), deepest first."""
    root = Path("/sys/fs/cgroup")
    for controller in root.iterdir() if root.is_dir() else []:
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass
