"""A real etcd + kube-apiserver on loopback, with cert-manager's CRDs installed.

``DevCluster.start(dir)`` brings the control plane up and returns once it is
ready; ``DevCluster.attach(dir)`` finds one started earlier (by another
process, e.g. ``akv-devcluster up``); ``.stop()`` stops every process it
manages and removes its state. Everything lives in ``dir`` except etcd's data,
which goes to tmpfs (``/dev/shm``) because fsync on disk dominates API latency.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akv_devcluster import binaries as bins
from akv_devcluster.kubeconfig import (
    SERVICE_CLUSTER_IP_RANGE,
    create_pki,
    write_kubeconfig,
    write_private,
)
from akv_devcluster.process import (
    ProcessError,
    ProcessGroup,
    ProcessRecord,
    ProcessSpec,
    is_alive,
    tail,
)

if TYPE_CHECKING:
    from akv_devcluster.node import NodeNetwork

STATE_FILE = "devcluster.json"
ADMIN_USER = "akv-devcluster-admin"
FIELD_MANAGER = "akv-devcluster"
# Everything this module creates inside the cluster directory; `stop` removes
# only these, so a directory the user pointed at keeps anything else.
_OWNED = (STATE_FILE, "kubeconfig", "tokens.csv", "pki", "logs", "identities", "node")


class DevClusterError(Exception):
    """The control plane could not be started, found or stopped; one-line message."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_ETCD_DATA_PREFIX = "akv-devcluster-etcd-"


def _sweep_orphaned_etcd_data() -> None:
    """Remove etcd data folders left in tmpfs by clusters whose owner was killed."""
    in_use: set[str] = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            for arg in cmdline.read_bytes().split(b"\0"):
                if arg.startswith(b"--data-dir="):
                    in_use.add(arg.split(b"=", 1)[1].decode(errors="replace"))
    now = time.time()
    for folder in _tmpfs_root().glob(f"{_ETCD_DATA_PREFIX}*"):
        with contextlib.suppress(OSError):
            # The age check spares a folder another start has just created and
            # not yet handed to its etcd.
            if str(folder) not in in_use and now - folder.stat().st_mtime > 60:
                shutil.rmtree(folder, ignore_errors=True)


def _tmpfs_root() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp() folder is made inside
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


class DevCluster:
    """Handle on a running dev control plane."""

    def __init__(self, directory: Path, state: dict[str, Any], processes: ProcessGroup) -> None:
        self.directory = directory
        self._state = state
        self.processes = processes

    # -- facts a client needs -------------------------------------------------

    @property
    def server_url(self) -> str:
        return str(self._state["server_url"])

    @property
    def kubeconfig_path(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.directory / "pki" / "ca.crt"

    @property
    def admin_token(self) -> str:
        return str(self._state["admin_token"])

    @property
    def node_token(self) -> str | None:
        """The kubelet's token (user system:node:<name>) when the cluster has a node."""
        token = self._state.get("node_token")
        return str(token) if token else None

    @property
    def etcd_url(self) -> str:
        return str(self._state["etcd_url"])

    @property
    def node_network(self) -> NodeNetwork | None:
        """The node's addresses when started with a node (akv_devcluster.node), else None."""
        from akv_devcluster.node import NodeNetwork

        data = self._state.get("node")
        return NodeNetwork.from_json(data) if data else None

    @property
    def kubectl_path(self) -> Path | None:
        kubectl = self._state.get("kubectl")
        return Path(kubectl) if kubectl else None

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def start(
        cls,
        directory: str | Path,
        *,
        binaries: bins.Binaries | None = None,
        install_crds: bool = True,
        die_with_parent: bool = False,
        timeout: float = 120.0,
        node: dict[str, Path] | None = None,
    ) -> DevCluster:
        """Start etcd and kube-apiserver, wait for /readyz, install CRDs.

        node (the paths of kubelet, kube-proxy, kube-scheduler and
        kube-controller-manager, from ``node.build_node_binaries``) adds those
        and a container runtime: a cluster that runs Pods (akv_devcluster.node).

        die_with_parent ties the processes to the calling process (the kernel
        sends them SIGTERM if it dies), for test sessions; ``up`` leaves it off
        so the control plane outlives the command.
        """
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        existing = _read_state(directory)
        if existing is not None:
            if _state_alive(existing):
                raise DevClusterError(
                    f"a dev cluster is already running in {directory}; run "
                    f"`akv-devcluster down --dir {directory}` first"
                )
            _cleanup_stale(directory, existing)
        try:
            found = binaries or bins.locate(build=False)
        except bins.BinariesError as exc:
            raise DevClusterError(str(exc)) from exc
        state: dict[str, Any] = {
            "version": 1,
            "admin_token": secrets.token_urlsafe(32),
            "processes": [],
            "kubectl": str(found.kubectl) if found.kubectl else None,
            "crd_dir": str(found.crd_dir) if found.crd_dir else None,
        }
        group = ProcessGroup(
            directory / "logs",
            lambda records: _save_processes(directory, state, records),
            die_with_parent=die_with_parent,
        )
        cluster = cls(directory, state, group)
        try:
            network = None
            if node is not None:
                from akv_devcluster import node as node_mod

                try:
                    node_mod.check_host(directory)
                    network = node_mod.claim_network(directory)
                except node_mod.NodeError as exc:
                    raise DevClusterError(str(exc)) from exc
                state["node"] = network.to_json()
                _write_state(directory, state)
                try:
                    node_mod.start_namespaces(cluster, network)
                except node_mod.NodeError as exc:
                    raise DevClusterError(str(exc)) from exc
            cluster._boot(found, timeout, network)
            if install_crds:
                cluster.install_crds(found.crd_files(), timeout=timeout)
            if node is not None and network is not None:
                try:
                    node_mod.start_node(cluster, network, node, timeout)
                except node_mod.NodeError as exc:
                    raise DevClusterError(str(exc)) from exc
        except BaseException:
            # Includes KeyboardInterrupt: a half-started cluster must not linger.
            cluster.stop()
            raise
        return cluster

    @classmethod
    def attach(cls, directory: str | Path) -> DevCluster:
        """A handle on a cluster another process started in directory."""
        directory = Path(directory).resolve()
        state = _read_state(directory)
        if state is None:
            raise DevClusterError(f"no dev cluster state in {directory}")
        records = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
        group = ProcessGroup(
            directory / "logs",
            lambda recs: _save_processes(directory, state, recs),
            records,
        )
        return cls(directory, state, group)

    def is_running(self) -> bool:
        return _state_alive(self._state) and self._readyz()

    def stop(self) -> None:
        """Stop every managed process (newest first) and remove the state."""
        _stop_node(self)
        self.processes.stop_all()
        _stop_node(self, finish=True)
        etcd_data = self._state.get("etcd_data_dir")
        if etcd_data:
            shutil.rmtree(etcd_data, ignore_errors=True)
        _remove_owned(self.directory)

    # -- generic process management (used by later add-ons too) ---------------

    def start_process(
        self,
        spec: ProcessSpec,
        ready: Callable[[], bool],
        *,
        timeout: float = 60.0,
    ) -> ProcessRecord:
        """Start one more managed process and wait until ready() is true."""
        record = self.processes.start(spec)
        deadline = time.monotonic() + timeout
        while True:
            code = self.processes.exit_code(record)
            if code is not None:
                self.processes.stop(spec.name)
                raise DevClusterError(
                    f"{spec.name} exited with code {code} while starting: "
                    f"{tail(record.log_file, 3)} (log: {record.log_file})"
                )
            with contextlib.suppress(OSError):
                if ready():
                    return record
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"{spec.name} was not ready after {timeout:.0f}s: "
                    f"{tail(record.log_file, 3)} (log: {record.log_file})"
                )
            time.sleep(0.2)

    # -- internals --------------------------------------------------------------

    def _boot(self, found: bins.Binaries, timeout: float, network: NodeNetwork | None) -> None:
        directory = self.directory
        # With a node, the API server listens on the host end of the node's
        # link: the kubelet and Pods (the `kubernetes` Service) reach it there.
        address = network.host_ip if network else "127.0.0.1"
        node_flags = (
            [
                "--enable-aggregator-routing=true",
                "--kubelet-preferred-address-types=InternalIP",
                # The kubelet is a node as on any cluster (system:node:<name>
                # in system:nodes): the Node authorizer limits it to its own
                # Pods' objects, NodeRestriction checks what it writes (its
                # PodCertificateRequests name its node, a Pod on it, the Pod's
                # ServiceAccount and a signer the Pod mounts).
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
            ]
            if network
            # Without a node nothing reaches the `kubernetes` Service, and
            # from 1.37 the endpoint reconciler refuses a loopback address.
            else ["--endpoint-reconciler-type=none", "--authorization-mode=RBAC"]
        )
        _sweep_orphaned_etcd_data()
        etcd_data = Path(tempfile.mkdtemp(prefix=_ETCD_DATA_PREFIX, dir=_tmpfs_root()))
        self._state["etcd_data_dir"] = str(etcd_data)
        _write_state(directory, self._state)

        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._state["etcd_url"] = etcd_url
        etcd = ProcessSpec(
            "etcd",
            [
                str(found.etcd),
                "--name=devcluster",
                f"--data-dir={etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=devcluster={peer_url}",
                # tmpfs already makes fsync cheap; skipping it keeps writes
                # fast when /dev/shm is absent and data lands on disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self.start_process(etcd, lambda: _http_ok(f"{etcd_url}/health"), timeout=timeout)

        pki = create_pki(directory / "pki", (network.host_ip,) if network else ())
        tokens = directory / "tokens.csv"
        lines = f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        if network:
            from akv_devcluster.node import NODE_USER

            self._state["node_token"] = secrets.token_urlsafe(32)
            lines += f'{self._state["node_token"]},{NODE_USER},{NODE_USER},"system:nodes"\n'
        write_private(tokens, lines.encode())
        port = free_port()
        server_url = f"https://{address}:{port}"
        self._state["server_url"] = server_url
        _write_state(directory, self._state)
        apiserver = ProcessSpec(
            "kube-apiserver",
            [
                str(found.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert_file}",
                f"--tls-private-key-file={pki.serving_key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_public_key_file}",
                f"--service-account-signing-key-file={pki.sa_signing_key_file}",
                f"--token-auth-file={tokens}",
                f"--authentication-config={_write_authentication_config(directory)}",
                "--allow-privileged=true",
                *node_flags,
                "--v=0",
            ],
        )
        ca = ssl.create_default_context(cafile=str(pki.ca_file))
        self.start_process(
            apiserver,
            lambda: _http_ok(f"{server_url}/readyz", ca=ca, token=self.admin_token),
            timeout=timeout,
        )
        write_kubeconfig(
            self.kubeconfig_path,
            server_url=server_url,
            ca_pem=pki.ca_file.read_bytes(),
            user=ADMIN_USER,
            token=self.admin_token,
        )
        self._allow_issuer_discovery()

    def _allow_issuer_discovery(self) -> None:
        """Let anyone read the service-account issuer's discovery document and
        JWKS, as a relying party (Entra ID, here the emulator) does without
        credentials; see _write_authentication_config for why nothing else opens."""
        from lightkube import Client
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.core.exceptions import ApiError
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.models.rbac_v1 import RoleRef, Subject
        from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

        name = "system:service-account-issuer-discovery"
        binding = ClusterRoleBinding(
            metadata=ObjectMeta(name=f"akv-devcluster:{name}:unauthenticated"),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
            subjects=[
                Subject(
                    apiGroup="rbac.authorization.k8s.io",
                    kind="Group",
                    name="system:unauthenticated",
                )
            ],
        )
        client = Client(
            config=KubeConfig.from_file(self.kubeconfig_path), field_manager=FIELD_MANAGER
        )
        try:
            client.apply(binding, force=True)
        except ApiError as exc:
            message = exc.status.message
            raise DevClusterError(f"granting issuer discovery failed: {message}") from exc
        finally:
            client.close()

    def _readyz(self) -> bool:
        try:
            ca = ssl.create_default_context(cafile=str(self.ca_file))
            return _http_ok(f"{self.server_url}/readyz", ca=ca, token=self.admin_token)
        except (OSError, KeyError):
            return False

    def install_crds(self, files: list[Path], *, timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD manifests and wait until each is Established."""
        from lightkube import Client, codecs
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

        client = Client(
            config=KubeConfig.from_file(self.kubeconfig_path), field_manager=FIELD_MANAGER
        )
        names: list[str] = []
        try:
            for path in files:
                with path.open() as handle:
                    for obj in codecs.load_all_yaml(handle):
                        client.apply(obj, force=True)
                        if obj.metadata is None or obj.metadata.name is None:
                            raise DevClusterError(f"{path}: a manifest without metadata.name")
                        names.append(obj.metadata.name)
            deadline = time.monotonic() + timeout
            for name in names:
                while True:
                    crd = client.get(CustomResourceDefinition, name)
                    conditions = (crd.status.conditions if crd.status else None) or []
                    if any(c.type == "Established" and c.status == "True" for c in conditions):
                        break
                    if time.monotonic() > deadline:
                        raise DevClusterError(f"CRD {name} not Established after {timeout:.0f}s")
                    time.sleep(0.1)
        except ApiError as exc:
            raise DevClusterError(f"installing CRDs failed: {exc.status.message}") from exc
        finally:
            client.close()
        return names


# Anonymous requests are accepted for these two paths only (any other path
# without credentials gets 401, as with --anonymous-auth=false); RBAC then lets
# system:unauthenticated read exactly them (_allow_issuer_discovery). That is
# what an OIDC relying party needs: AKS publishes the same two documents on a
# public URL for Entra ID.
_AUTHENTICATION_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /.well-known/openid-configuration
  - path: /openid/v1/jwks
"""


def _write_authentication_config(directory: Path) -> Path:
    path = directory / "pki" / "authentication-config.yaml"
    path.write_text(_AUTHENTICATION_CONFIG)
    return path


def _http_ok(url: str, *, ca: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310 - loopback URLs built above
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=ca) as response:  # noqa: S310
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevClusterError(f"cannot read {path}: {exc}") from exc
    return state


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    # The state holds the admin token, so it is private like the kubeconfig.
    tmp = directory / f".{STATE_FILE}.tmp"
    write_private(tmp, json.dumps(state, indent=2).encode())
    tmp.replace(directory / STATE_FILE)


def _save_processes(directory: Path, state: dict[str, Any], records: list[ProcessRecord]) -> None:
    state["processes"] = [r.to_json() for r in records]
    _write_state(directory, state)


def _state_alive(state: dict[str, Any]) -> bool:
    records = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
    return bool(records) and all(is_alive(r) for r in records)


def _stop_node(cluster: DevCluster, *, finish: bool = False) -> None:
    # Before the control plane stops (finish=False): the node's processes
    # and containers; after it (finish=True): namespaces, cgroups, claim.
    network = cluster.node_network
    if network is None:
        return
    from akv_devcluster.node import NodeError, finish_node, stop_node

    try:
        (finish_node if finish else stop_node)(cluster, network)
    except NodeError as exc:
        raise DevClusterError(str(exc)) from exc


def _cleanup_stale(directory: Path, state: dict[str, Any]) -> None:
    # A previous run died half-way: stop what is left of it before reusing dir.
    records = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
    group = ProcessGroup(directory / "logs", lambda _: None, records)
    stale = DevCluster(directory, state, group)
    _stop_node(stale)
    group.stop_all()
    _stop_node(stale, finish=True)
    etcd_data = state.get("etcd_data_dir")
    if etcd_data:
        shutil.rmtree(etcd_data, ignore_errors=True)
    _remove_owned(directory)


def _remove_owned(directory: Path) -> None:
    for name in _OWNED:
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if nothing else is in it


def start_with_ports_retry(directory: Path, **kwargs: Any) -> DevCluster:
    """DevCluster.start, retried when a just-freed port was taken by someone else."""
    for attempt in range(3):
        try:
            return DevCluster.start(directory, **kwargs)
        except (DevClusterError, ProcessError) as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")
