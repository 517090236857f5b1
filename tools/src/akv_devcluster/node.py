"""One real node for the dev cluster: containerd, kubelet, kube-proxy, CNI.

``akv-devcluster up --node`` adds, besides etcd and the API server,
kube-controller-manager and kube-scheduler (host processes) and a node whose
processes (containerd, kubelet, kube-proxy) live in namespaces of their own:

* a **network namespace**: the node's end of a veth pair (``eth0``,
  10.N.255.2) faces the host's end (``akvh<id>``, 10.N.255.1, where the API
  server and the Key Vault emulator listen); Pods sit on a CNI bridge inside
  it (10.N.0.0/24) and the host routes that range to the node. The namespace
  has no default route and nothing masquerades, so the pod network never
  reaches past this machine. kube-proxy's iptables rules and the bridge live
  in it, so two node clusters do not see each other's rules.
* a **private mount namespace** with fresh tmpfs on /run, /var/lib and
  /var/log: containerd's sockets and state, the CNI cache, the pods' network
  namespace files and the kubelet's log links all land there, and every mount
  containerd and the kubelet make (overlay root filesystems, volume tmpfs)
  disappears when the last process in it ends. The kubelet's kernel-tunable
  check (it *writes* vm.overcommit_memory, kernel.panic... into the host) reads
  files bind-mounted over /proc/sys there, so the host's values never change.

Both namespaces are held by one ``sleep`` process (``node-namespaces``);
containerd, kubelet and kube-proxy join them with ``nsenter``. Containers'
cgroups are under ``/akv-<id>`` in every cgroup hierarchy (kubelet's
``cgroupRoot``), containerd and its shims under ``/akv-<id>/runtime``; ``down``
kills every process in that tree, stops the holder (the namespaces and their
mounts go with it) and removes the cgroups. Nothing is written outside the
cluster directory except the cgroups and the address claim in
``/run/akv-devcluster/`` (both removed by ``down``).

The API server is told about the node's network: it binds and advertises the
host end of the link (the ``kubernetes`` Service's endpoint, reached by Pods
through kube-proxy) and routes webhook and aggregated-API calls straight to
endpoint (Pod) IPs (``--enable-aggregator-routing``), as it has no kube-proxy
of its own on the host.

Python API (used by cluster.py and the tests): ``NodeNetwork`` (addresses,
``host_ip`` is where Pods reach the host), ``load_image(cluster, archive)``
imports a docker/OCI archive into the node's containerd.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akv_devcluster import binaries as bins
from akv_devcluster.images import PAUSE_IMAGE, ImageError, pause_image_archive
from akv_devcluster.kubeconfig import write_kubeconfig
from akv_devcluster.process import ProcessGroup, ProcessSpec, tail

if TYPE_CHECKING:
    from akv_devcluster.cluster import DevCluster

NODE_NAME = "akv-devcluster-node"
# The kubelet's user (group system:nodes), a token in the API server's token file.
NODE_USER = f"system:node:{NODE_NAME}"
CLAIMS_DIR = Path("/run/akv-devcluster")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN_DIR = Path("/usr/lib/cni")
# Host tools the node needs, each with the Debian package that has it.
_HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "mount": "mount",
}
# What the kubelet insists on (pkg/kubelet/cm setupKernelTunables); files with
# these values are bind-mounted over /proc/sys inside the node's mount namespace.
_KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Directories inside the node's mount namespace that get a fresh tmpfs, so
# what containerd, CNI and the kubelet write there never reaches the host.
_PRIVATE_DIRS = ("/run", "/var/lib", "/var/log")
NODE_PROCESSES = ("node-namespaces", "containerd", "kubelet", "kube-proxy")


class NodeError(Exception):
    """The node could not be set up, started or removed; one-line message."""


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of one node cluster (N is claimed in /run/akv-devcluster)."""

    cluster_id: str
    octet: int

    @property
    def host_ip(self) -> str:
        """The host's end of the link: API server, emulator, anything Pods call on the host."""
        return f"10.{self.octet}.255.1"

    @property
    def node_ip(self) -> str:
        return f"10.{self.octet}.255.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.{self.octet}.0.0/24"

    @property
    def host_link(self) -> str:
        return f"akvh{self.cluster_id}"

    @property
    def cgroup_name(self) -> str:
        return f"akv-{self.cluster_id}"

    @property
    def claim(self) -> Path:
        return CLAIMS_DIR / f"10.{self.octet}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeNetwork:
        return cls(cluster_id=str(data["cluster_id"]), octet=int(data["octet"]))


# --- host checks --------------------------------------------------------------


def check_host(directory: Path) -> None:
    """Fail with what is missing before anything is started."""
    if os.geteuid() != 0:
        raise NodeError("a node needs root (containerd, network and mount namespaces, cgroups)")
    missing = sorted(
        {pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None}
        | ({"containernetworking-plugins"} if not (CNI_BIN_DIR / "bridge").is_file() else set())
    )
    if missing:
        raise NodeError(
            f"missing Debian packages for the node: {', '.join(missing)} "
            "(run hack/install-node-deps.sh)"
        )
    hierarchies = _cgroup_hierarchies()
    names = {h.name for h in hierarchies}
    needed = {"cpu", "cpuacct", "cpuset", "memory", "pids"}
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        raise NodeError(
            "this host has a pure cgroup v2 hierarchy; the dev-cluster node is set up for "
            "the cgroup v1 (hybrid) layout of the project's machines"
        )
    if not needed <= names:
        raise NodeError(
            f"cgroup v1 controllers missing under {CGROUP_ROOT}: "
            f"{', '.join(sorted(needed - names))}"
        )
    resolved = directory.resolve()
    for private in _PRIVATE_DIRS:
        if resolved.is_relative_to(private):
            raise NodeError(
                f"the cluster directory {resolved} is under {private}, which the node "
                "hides behind its own tmpfs; choose another --dir"
            )


def _cgroup_hierarchies() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = []
    for entry in sorted(CGROUP_ROOT.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and (entry / "cgroup.procs").is_file():
            found.append(entry)
    return found


# --- small helpers ------------------------------------------------------------


def _run(argv: list[str], *, what: str, input_text: str | None = None) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, input=input_text, timeout=300
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise NodeError(f"{what} failed: {' | '.join(detail[-3:]) or f'exit {proc.returncode}'}")
    return proc.stdout


def _in_node(pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", f"--target={pid}", "--mount", "--net", "--", *argv]


def cluster_id(directory: Path) -> str:
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:6]


def _sweep_dead_claims() -> None:
    """Release claims (and empty cgroups) of node clusters whose processes are gone.

    A test run killed with SIGKILL takes its processes and namespaces with it
    (they die with their parent), but its claim and cgroup folders stay.
    """
    if not CLAIMS_DIR.is_dir():
        return
    for claim in CLAIMS_DIR.iterdir():
        try:
            owner = Path((claim / "owner").read_text().strip())
            octet = int(claim.name.split(".")[1])
        except (OSError, ValueError, IndexError):
            continue
        state_file = owner / "devcluster.json"
        # A claim is made before its cluster records the namespace holder:
        # a young one belongs to a cluster that is still starting.
        with contextlib.suppress(OSError):
            if time.time() - claim.stat().st_mtime < 300:
                continue
        alive = False
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            holder = next(
                (p for p in state.get("processes", []) if p.get("name") == "node-namespaces"), None
            )
            if holder is not None:
                alive = _pid_started_at(int(holder["pid"])) == int(holder["start_time"])
        if alive:
            continue
        net = NodeNetwork(cluster_id(owner), octet)
        with contextlib.suppress(NodeError):
            _kill_cgroup_tree(net)
        _remove_cgroups(net)
        shutil.rmtree(claim, ignore_errors=True)


def _pid_started_at(pid: int) -> int | None:
    from akv_devcluster.process import process_start_time

    return process_start_time(pid)


def claim_network(directory: Path) -> NodeNetwork:
    """Reserve a free 10.N.0.0/16 for this cluster (a directory per claim in /run)."""
    CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
    _sweep_dead_claims()
    routes = _run(["ip", "-4", "route", "show", "table", "all"], what="ip route")
    addresses = _run(["ip", "-4", "-o", "addr", "show"], what="ip addr")
    ident = cluster_id(directory)
    for octet in range(200, 250):
        prefix = f"10.{octet}."
        if prefix in routes or prefix in addresses:
            continue
        claim = CLAIMS_DIR / f"10.{octet}"
        try:
            claim.mkdir()
        except FileExistsError:
            continue
        (claim / "owner").write_text(f"{directory.resolve()}\n")
        return NodeNetwork(ident, octet)
    raise NodeError(f"no free 10.N.0.0/16 between 10.200 and 10.249 (claims in {CLAIMS_DIR})")


def running_node_clusters() -> list[str]:
    """Directories of node clusters whose claim is held on this machine."""
    if not CLAIMS_DIR.is_dir():
        return []
    owners = []
    for claim in sorted(CLAIMS_DIR.iterdir()):
        with contextlib.suppress(OSError):
            owners.append((claim / "owner").read_text().strip())
    return owners


# --- namespaces and network -----------------------------------------------------


def start_namespaces(cluster: DevCluster, net: NodeNetwork) -> int:
    """Start the holder of the node's namespaces, mount its tmpfs, wire the link.

    Runs before the API server starts: it binds to the host end of the link.
    """
    _make_cgroups(net)
    node_dir = cluster.directory / "node"
    sysctl_dir = node_dir / "sysctl"
    sysctl_dir.mkdir(parents=True, exist_ok=True)
    spec = ProcessSpec(
        "node-namespaces",
        ["unshare", "--mount", "--net", "--propagation", "private", "--", "sleep", "infinity"],
    )
    record = cluster.processes.start(spec)
    pid = record.pid
    deadline = time.monotonic() + 10
    host_net = os.readlink("/proc/self/ns/net")
    while True:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/net") != host_net:
                break
        if time.monotonic() > deadline:
            raise NodeError(
                f"unshare did not create the node's namespaces: {tail(record.log_file)}"
            )
        time.sleep(0.05)
    enter_mnt = ["nsenter", f"--target={pid}", "--mount", "--"]
    for folder in _PRIVATE_DIRS:
        _run(
            [*enter_mnt, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", folder],
            what=f"mounting a private tmpfs on {folder}",
        )
    for key, value in _KUBELET_SYSCTLS.items():
        if Path(f"/proc/sys/{key}").read_text().strip() == value:
            continue
        fake = sysctl_dir / key.replace("/", ".")
        fake.write_text(f"{value}\n")
        _run(
            [*enter_mnt, "mount", "--bind", "-o", "ro", str(fake), f"/proc/sys/{key}"],
            what=f"masking /proc/sys/{key} for the kubelet",
        )
    link = net.host_link
    _run(
        ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", str(pid)],
        what="creating the node's veth pair",
    )
    _run(["ip", "addr", "add", f"{net.host_ip}/30", "dev", link], what="ip addr (host end)")
    _run(["ip", "link", "set", link, "up"], what="ip link up (host end)")
    enter_net = ["nsenter", f"--target={pid}", "--net", "--"]
    _run(
        [*enter_net, "ip", "addr", "add", f"{net.node_ip}/30", "dev", "eth0"],
        what="ip addr (node end)",
    )
    _run([*enter_net, "ip", "link", "set", "eth0", "up"], what="ip link up (node end)")
    _run([*enter_net, "ip", "link", "set", "lo", "up"], what="ip link up (node loopback)")
    _run(
        ["ip", "route", "add", net.pod_cidr, "via", net.node_ip, "dev", link],
        what="routing the pod network to the node",
    )
    # Forwarding between the pod bridge and the link, and bridged traffic
    # through iptables (Pod -> Service -> Pod on the same bridge needs it):
    # both per network namespace, the host's values are untouched.
    _run(
        [
            *enter_net,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward; "
            "modprobe br_netfilter 2>/dev/null; "
            "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true",
        ],
        what="enabling forwarding in the node",
    )
    return pid


def _make_cgroups(net: NodeNetwork) -> None:
    for hierarchy in _cgroup_hierarchies():
        for sub in (net.cgroup_name, f"{net.cgroup_name}/runtime"):
            folder = hierarchy / sub
            folder.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    parent = (folder.parent / knob).read_text().strip()
                    (folder / knob).write_text(parent)


def _join_runtime_cgroup(net: NodeNetwork, pid: int) -> None:
    for hierarchy in _cgroup_hierarchies():
        with contextlib.suppress(OSError):
            (hierarchy / net.cgroup_name / "runtime" / "cgroup.procs").write_text(str(pid))


def _cgroup_pids(net: NodeNetwork) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / net.cgroup_name
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _kill_cgroup_tree(net: NodeNetwork) -> None:
    for _ in range(50):
        pids = _cgroup_pids(net)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise NodeError(f"processes in cgroup /{net.cgroup_name} survived SIGKILL: {sorted(pids)}")


def _remove_cgroups(net: NodeNetwork) -> None:
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / net.cgroup_name
        if not top.is_dir():
            continue
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, top]:
            for _ in range(20):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# --- configuration files ---------------------------------------------------------


def _containerd_config(node_dir: Path, net: NodeNetwork) -> Path:
    cni_conf = node_dir / "cni" / "net.d"
    cni_conf.mkdir(parents=True, exist_ok=True)
    (cni_conf / "10-akv-devcluster.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": f"akv-{net.cluster_id}",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "akvbr0",
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": net.pod_cidr}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )
    )
    config = node_dir / "containerd" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"""version = 2
root = "{node_dir / "containerd" / "root"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj below ours.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
"""
    )
    return config


def _kubelet_config(node_dir: Path, net: NodeNetwork) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # kubelet 1.36 refuses cgroup v1 unless told; the machines are v1/hybrid.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{net.cgroup_name}",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "address": net.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # The API server reaches logs/exec with its admin identity only; there
        # are no kubelet client certificates in a dev cluster.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        "protectKernelDefaults": True,
        "resolvConf": "",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "podLogsDir": "/var/log/pods",
    }
    path = node_dir / "kubelet" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def _kube_proxy_config(node_dir: Path, net: NodeNetwork, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": net.pod_cidr,
        "bindAddress": net.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the kernel's conntrack settings (some are host-wide) alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }
    path = node_dir / "kube-proxy" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


# --- lifecycle -------------------------------------------------------------------


def _wait(cluster: DevCluster, name: str, ready: Any, timeout: float, what: str) -> None:
    record = cluster.processes.get(name)
    deadline = time.monotonic() + timeout
    while True:
        if record is not None and cluster.processes.exit_code(record) is not None:
            raise NodeError(f"{name} exited while starting: {tail(record.log_file, 3)}")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if ready():
                return
        if time.monotonic() > deadline:
            log = f": {tail(record.log_file, 3)} (log: {record.log_file})" if record else ""
            raise NodeError(f"{what} after {timeout:.0f}s{log}")
        time.sleep(0.2)


def start_node(
    cluster: DevCluster, net: NodeNetwork, found: dict[str, Path], timeout: float
) -> None:
    """Start controller-manager, scheduler, containerd, kubelet, kube-proxy; wait for Ready."""
    node_dir = cluster.directory / "node"
    node_dir.mkdir(parents=True, exist_ok=True)
    pki = cluster.directory / "pki"
    kubeconfig = str(cluster.kubeconfig_path)
    cluster.start_process(
        ProcessSpec(
            "kube-controller-manager",
            [
                str(found["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
                # 1.37 no longer knows the cloud controllers (service-lb,
                # cloud-node-lifecycle: cloud-controller-manager's now) and
                # refuses to start when they are named.
                "--controllers=*,-nodeipam",
                "--v=1",
            ],
        ),
        lambda: True,
        timeout=timeout,
    )
    cluster.start_process(
        ProcessSpec(
            "kube-scheduler",
            [
                str(found["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        ),
        lambda: True,
        timeout=timeout,
    )
    holder = cluster.processes.get("node-namespaces")
    if holder is None:
        raise NodeError("the node's namespaces were not set up (start_namespaces)")
    pid = holder.pid
    containerd_config = _containerd_config(node_dir, net)
    record = cluster.processes.start(
        ProcessSpec("containerd", _in_node(pid, ["containerd", "--config", str(containerd_config)]))
    )
    _join_runtime_cgroup(net, record.pid)
    _wait(
        cluster,
        "containerd",
        lambda: _ctr_ok(pid),
        timeout,
        "containerd did not answer",
    )
    try:
        pause = pause_image_archive()
    except ImageError as exc:
        raise NodeError(str(exc)) from exc
    import_archive(pid, pause)
    kubelet_config = _kubelet_config(node_dir, net)
    if cluster.node_token is None:
        raise NodeError("the API server was started without the node's token")
    kubelet_kubeconfig = write_kubeconfig(
        node_dir / "kubelet" / "kubeconfig",
        server_url=cluster.server_url,
        ca_pem=cluster.ca_file.read_bytes(),
        user=NODE_USER,
        token=cluster.node_token,
    )
    cluster.start_process(
        ProcessSpec(
            "kubelet",
            _in_node(
                pid,
                [
                    str(found["kubelet"]),
                    f"--config={kubelet_config}",
                    f"--kubeconfig={kubelet_kubeconfig}",
                    # The default root dir /var/lib/kubelet is on the node's
                    # private tmpfs: short socket paths (a deep --dir would
                    # pass the 108-byte limit) and gone with the namespace.
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={net.node_ip}",
                    "--v=1",
                ],
            ),
        ),
        lambda: True,
        timeout=timeout,
    )
    proxy_config = _kube_proxy_config(node_dir, net, cluster.kubeconfig_path)
    cluster.start_process(
        ProcessSpec(
            "kube-proxy",
            _in_node(pid, [str(found["kube-proxy"]), f"--config={proxy_config}", "--v=1"]),
        ),
        lambda: True,
        timeout=timeout,
    )
    wait_node_ready(cluster, timeout)


def _ctr_ok(pid: int) -> bool:
    proc = subprocess.run(
        _in_node(pid, ["ctr", "--timeout", "2s", "version"]),
        capture_output=True,
        check=False,
        timeout=10,
    )
    return proc.returncode == 0


# The node's processes in start order: start_node hands each over as soon as it
# runs, so one that exits at startup (a flag its version refuses, a port in
# use) is only noticed while waiting for what it should have done.
STARTUP_PROCESSES = (
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
)


def exited_node_process(processes: ProcessGroup) -> str | None:
    """One line on the first node process that has exited: its name, exit code
    and the tail of its log; None while they all run."""
    for name in STARTUP_PROCESSES:
        record = processes.get(name)
        if record is None:
            continue
        code = processes.exit_code(record)
        if code is not None:
            return (
                f"{name} exited with code {code}: {tail(record.log_file, 5)} "
                f"(log: {record.log_file})"
            )
    return None


def wait_node_ready(cluster: DevCluster, timeout: float) -> None:
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Node, ServiceAccount

    client = Client(config=KubeConfig.from_file(cluster.kubeconfig_path))
    deadline = time.monotonic() + timeout
    last = "not registered yet"
    record = cluster.processes.get("kubelet")
    try:
        # Pods are refused until the controller-manager made the namespace's
        # `default` ServiceAccount; a cluster handed out as ready accepts Pods.
        while True:
            exited = exited_node_process(cluster.processes)
            if exited is not None:
                raise NodeError(exited)
            try:
                client.get(ServiceAccount, "default", namespace="default")
                break
            except ApiError:
                if time.monotonic() > deadline:
                    raise NodeError(
                        "kube-controller-manager did not create the default ServiceAccount "
                        f"after {timeout:.0f}s (log: {cluster.directory / 'logs'})"
                    ) from None
                time.sleep(0.2)
        while True:
            exited = exited_node_process(cluster.processes)
            if exited is not None:
                raise NodeError(exited)
            try:
                node = client.get(Node, NODE_NAME)
                for cond in (node.status.conditions if node.status else None) or []:
                    if cond.type == "Ready":
                        if cond.status == "True":
                            return
                        last = f"{cond.reason}: {cond.message}"
            except ApiError as exc:
                last = exc.status.message or "not registered yet"
            if time.monotonic() > deadline:
                log = tail(record.log_file, 5) if record else ""
                raise NodeError(
                    f"node {NODE_NAME} not Ready after {timeout:.0f}s ({last}); kubelet log: {log}"
                )
            time.sleep(0.5)
    finally:
        client.close()


def import_archive(pid: int, archive: Path) -> list[str]:
    """ctr images import into the k8s.io namespace; returns the image names."""
    if not archive.is_file():
        raise NodeError(f"image archive {archive} does not exist")
    out = _run(
        _in_node(
            pid,
            ["ctr", "-n", "k8s.io", "images", "import", str(archive)],
        ),
        what=f"importing {archive.name}",
    )
    names = []
    for line in out.splitlines():
        # "unpacking <name> (sha256:...)...done" or "<name> saved"
        words = line.split()
        if len(words) >= 2 and words[0] == "unpacking":
            names.append(words[1])
    return names


def load_image(cluster: DevCluster, archive: Path) -> list[str]:
    """Import a docker/OCI archive into the running node's containerd; returns its names."""
    if cluster.node_network is None:
        raise NodeError(
            f"the dev cluster in {cluster.directory} has no node (start it with `up --node`)"
        )
    holder = cluster.processes.get("node-namespaces")
    if holder is None:
        raise NodeError(f"the node of the dev cluster in {cluster.directory} is not running")
    return import_archive(holder.pid, archive.resolve())


def stop_node(cluster: DevCluster, net: NodeNetwork) -> None:
    """Stop the node's processes and containers (before the control plane stops).

    The namespace holder stays until the API server has stopped: the API
    server listens on the link's host end, which goes with the namespace, and
    takes ~10 s longer to shut down once its address vanished.
    ``finish_node`` (after the control plane) removes the rest.
    """
    # Nothing of the node's state is worth a graceful shutdown: the kubelet
    # would spend its grace period on Pods that are killed below anyway.
    for name in ("kube-proxy", "kubelet"):
        cluster.processes.stop(name, timeout=1)
    # containerd, its shims and every container are in the cgroup tree.
    with contextlib.suppress(NodeError):
        _kill_cgroup_tree(net)
    for name in ("containerd", "kube-scheduler", "kube-controller-manager"):
        cluster.processes.stop(name, timeout=2)
    _kill_cgroup_tree(net)


def finish_node(cluster: DevCluster, net: NodeNetwork) -> None:
    """Stop the namespace holder; remove the cgroups, the link and the claim."""
    cluster.processes.stop("node-namespaces", timeout=2)
    _kill_cgroup_tree(net)
    _remove_cgroups(net)
    # The veth's host end goes with the network namespace; be sure of it.
    with contextlib.suppress(NodeError):
        if Path(f"/sys/class/net/{net.host_link}").exists():
            _run(["ip", "link", "del", net.host_link], what="removing the host link")
    shutil.rmtree(net.claim, ignore_errors=True)
    with contextlib.suppress(OSError):
        CLAIMS_DIR.rmdir()


def build_node_binaries(*, build: bool) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for binary in bins.NODE_BINARIES:
        if build:
            paths[binary.name] = bins.ensure_binary(binary)
        elif bins.is_built(binary):
            paths[binary.name] = bins.binary_path(binary)
        else:
            raise NodeError(f"{binary.name} {binary.version} is not built yet; run `make binaries`")
    return paths
