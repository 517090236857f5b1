"""The benchmark's world: a dev control plane, the Key Vault emulator, an RSA-2048
CA in it, an Issuer, and the controller as a subprocess under its ServiceAccount
with exactly config/rbac's ClusterRole and leader-election Role.

Everything is real: the controller is `python -m akv_issuer.controller`, the API
server is kube-apiserver + etcd (akv_devcluster), Key Vault is
`akv-emulator` over HTTPS with challenge auth and workload identity.
"""

from __future__ import annotations

import asyncio
import base64
import compileall
import contextlib
import datetime as dt
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError, AsyncClient, KubeConfig, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding, RoleBinding
from lightkube.types import PatchType

import akv_issuer
from akv_devcluster import DevCluster, create_identity
from akv_devcluster.binaries import locate
from akv_devcluster.cluster import start_with_ports_retry
from akv_emulator.testing import EmulatorProcess
from akv_issuer.controller.api import API_VERSION, GROUP, CertificateRequest, Issuer
from akv_issuer.keyvault import ClientSecret, KeyVaultAccess
from akv_issuer.pki import build_root_ca, default_algorithm, sign_certificate
from bench.csrs import csr_pems

REPO = Path(__file__).resolve().parents[1]
MANAGER = "akv-bench"
APPROVER = "bench-approver"
CONTROLLER_NS = "akv-system"
CONTROLLER_SA = "controller"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": reason,
        "lastTransitionTime": now_text(),
    }


def csr_pool(count: int) -> list[str]:
    """``count`` distinct EC P-256 CSRs (base64 of the PEM, as spec.request)."""
    return [base64.b64encode(pem).decode() for pem in csr_pems(count)]


async def bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the jobs with at most ``limit`` in flight; results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def ensure_bytecode() -> dict[str, Any]:
    """Compile what the controller imports (the environment's site-packages and
    the measured ``akv_issuer``) to bytecode, as the image ships it (Dockerfile:
    ``UV_COMPILE_BYTECODE=1``).

    Without it, on a machine with ``PYTHONDONTWRITEBYTECODE`` set (as this one
    and the lead's), every controller start compiled ~2,000 modules from source:
    0.76 against 0.35 s of import CPU and 79.4 against 75.7 MiB idle (the
    compiler's garbage fragments the heap), a mode no user runs. Files already
    compiled are skipped (a stat each), so only the first run pays.
    """
    started = time.process_time()
    folders = [Path(sysconfig.get_paths()["purelib"]), Path(akv_issuer.__file__).parent]
    ok = all(compileall.compile_dir(folder, quiet=2) for folder in folders)
    return {
        "folders": [str(f) for f in folders],
        "all_compiled": ok,
        "cpu_s": round(time.process_time() - started, 2),
    }


# ---------------------------------------------------------------------------
# The controller process


def proc_stat_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/<pid>/stat fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before the process was spawned
    probe_port: int
    metrics_port: int
    log_path: Path
    ready_after: float | None = None
    rss_samples: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), ""
        except OSError:
            return 0, ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        return proc_stat_cpu(self.pid)

    def rss_mib(self) -> float:
        return proc_status_kib(self.pid, "VmRSS") / 1024

    def hwm_mib(self) -> float:
        """Peak RSS since the process started (VmHWM)."""
        return proc_status_kib(self.pid, "VmHWM") / 1024

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self._get(self.metrics_port, "/metrics")[1].splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] == name:
                total += float(value)
        return total

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll /readyz every 10 ms; seconds from spawn to the first 200."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"controller exited:\n{self.log_tail()}")
            if self._get(self.probe_port, "/readyz")[0] == 200:
                self.ready_after = time.monotonic() - self.started
                return self.ready_after
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.01)

    def stop(self, timeout: float = 60.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class RSSSampler:
    """Samples a controller's VmRSS every ``interval`` seconds while running."""

    def __init__(self, controller: Controller, interval: float = 0.1) -> None:
        self.controller = controller
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append(self.controller.rss_mib())
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RSSSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def peak(self) -> float:
        return max(self.samples, default=float("nan"))


# ---------------------------------------------------------------------------
# The world


@dataclass
class BenchEnv:
    work: Path
    cluster: DevCluster
    emulator: EmulatorProcess
    kube: AsyncClient
    kv: KeyVaultAccess
    kv_auth: ClientSecret
    kubeconfig: Path = Path()
    ca_name: str = ""
    ca_pem: bytes = b""
    controllers: list[Controller] = field(default_factory=list)
    bytecode: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def create(cls, work: Path, *, emulator_args: Sequence[str] = ()) -> BenchEnv:
        """``emulator_args``: more ``akv-emulator serve`` options (bench/pools.py: the
        pool's vault host names and the proxy that serves them)."""
        bytecode = await asyncio.to_thread(ensure_bytecode)
        cluster = await asyncio.to_thread(
            start_with_ports_retry,
            work / "cluster",
            binaries=locate(build=False),
            die_with_parent=True,
        )
        try:
            cluster.install_crds(sorted((REPO / "config/crd/bases").glob("*.yaml")))
            emulator = await asyncio.to_thread(
                functools.partial(
                    EmulatorProcess.start, work / "emulator", extra_args=list(emulator_args)
                )
            )
        except BaseException:
            cluster.stop()
            raise
        kube = AsyncClient(
            config=KubeConfig.from_file(cluster.kubeconfig_path),
            field_manager=MANAGER,
            timeout=httpx2.Timeout(600.0),
        )
        kv, auth = emulator.env.service_principal_access(timeout=60)
        env = cls(work, cluster, emulator, kube, kv, auth)
        env.bytecode = bytecode
        await env._setup()
        return env

    async def _setup(self) -> None:
        await self.kube.create(Namespace(metadata=ObjectMeta(name=CONTROLLER_NS)))
        with (REPO / "config/rbac/role.yaml").open() as handle:
            (role,) = codecs.load_all_yaml(handle)
        assert role.metadata is not None
        await self.kube.apply(role, field_manager=MANAGER, force=True)
        identity = await create_identity(
            self.kube,
            namespace=CONTROLLER_NS,
            name=CONTROLLER_SA,
            server_url=self.cluster.server_url,
            ca_pem=self.cluster.ca_file.read_bytes(),
            kubeconfig_dir=self.work / "identities",
            expiration_seconds=6 * 3600,
        )
        self.kubeconfig = identity.kubeconfig_path
        subject = [Subject(kind="ServiceAccount", name=CONTROLLER_SA, namespace=CONTROLLER_NS)]
        await self.kube.apply(
            ClusterRoleBinding(
                metadata=ObjectMeta(name="akv-bench-manager"),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io",
                    kind="ClusterRole",
                    name=str(role.metadata.name),
                ),
                subjects=subject,
            ),
            field_manager=MANAGER,
        )
        with (REPO / "config/rbac/leader_election_role.yaml").open() as handle:
            (leader,) = codecs.load_all_yaml(handle)
        assert leader.metadata is not None
        leader.metadata.namespace = CONTROLLER_NS
        await self.kube.apply(leader, field_manager=MANAGER)
        await self.kube.apply(
            RoleBinding(
                metadata=ObjectMeta(name="akv-bench-leader", namespace=CONTROLLER_NS),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io",
                    kind="Role",
                    name=str(leader.metadata.name),
                ),
                subjects=subject,
            ),
            field_manager=MANAGER,
        )
        await self._make_ca()

    async def _make_ca(self) -> None:
        """An RSA-2048 key in the emulator and its self-signed CA certificate in a secret."""
        name = f"bench-ca-{uuid.uuid4().hex[:8]}"
        vault = self.emulator.env.vault_url
        key = await self.kv.create_key(vault, name, self.kv_auth, kty="RSA", size=2048)
        plan = build_root_ca(
            key.public_key,
            "azure-keyvault-issuer bench CA",
            lifetime=dt.timedelta(days=365),
            now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        )
        cert = await sign_certificate(
            plan.builder,
            key.public_key,
            default_algorithm(key.public_key),
            self.kv.signer(key, self.kv_auth),
        )
        self.ca_pem = cert.public_bytes(serialization.Encoding.PEM)
        await self.kv.set_secret(vault, name, self.ca_pem.decode(), self.kv_auth)
        self.ca_name = name

    async def close(self) -> None:
        for controller in self.controllers:
            controller.stop(timeout=30)
        with contextlib.suppress(Exception):
            await self.kv.close()
        with contextlib.suppress(Exception):
            await self.kube.close()
        await asyncio.to_thread(self.emulator.stop)
        await asyncio.to_thread(self.cluster.stop)

    # -- namespaces and issuers -------------------------------------------

    async def namespace(self, name: str) -> str:
        await self.kube.create(Namespace(metadata=ObjectMeta(name=name)))
        return name

    async def create_issuer(self, namespace: str, name: str = "bench") -> dict[str, str]:
        await self.kube.create(
            Issuer(
                apiVersion=API_VERSION,
                kind="Issuer",
                metadata=ObjectMeta(name=name, namespace=namespace),
                spec={"keyVaultBaseURL": self.emulator.env.vault_url, "keyName": self.ca_name},
            )
        )
        return {"name": name, "kind": "Issuer", "group": GROUP}

    # -- the controller -------------------------------------------------------

    def start_controller(
        self,
        concurrency: int,
        *,
        extra: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        kubeconfig: Path | None = None,
        environ: dict[str, str] | None = None,
        leader_elect: bool = True,
    ) -> Controller:
        """``kubeconfig`` replaces the controller's own (e.g. one through a proxy);
        ``environ`` adds variables (e.g. AZURE_HTTP_USER_AGENT to tell replicas apart);
        ``leader_elect=False``: /readyz turns 200 only once every informer has
        listed (with leader election a replica is ready while it can reach the
        Lease, before its caches are filled)."""
        probe, metrics = free_port(), free_port()
        log_path = self.work / f"controller-{len(self.controllers)}.log"
        env = {**os.environ, **self.emulator.env.azure_environ(), "PYTHONUNBUFFERED": "1"}
        env.update(environ or {})
        env.pop("KUBECONFIG", None)
        command = [
            *wrapper,
            sys.executable,
            "-m",
            "akv_issuer.controller",
            "--kubeconfig",
            str(kubeconfig or self.kubeconfig),
            "--cluster-resource-namespace",
            CONTROLLER_NS,
            *(
                ["--leader-elect", "--leader-election-namespace", CONTROLLER_NS]
                if leader_elect
                else []
            ),
            "--metrics-bind-address",
            f"127.0.0.1:{metrics}",
            "--health-probe-bind-address",
            f"127.0.0.1:{probe}",
            # A free port, so two benchmark runs (or a test) can share the machine.
            "--crl-bind-address",
            f"127.0.0.1:{free_port()}",
            "--tls-ca-file",
            self.emulator.env.ca_file,
            "--concurrency",
            str(concurrency),
            *extra,
        ]
        with log_path.open("ab") as log:
            started = time.monotonic()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        controller = Controller(process, started, probe, metrics, log_path)
        self.controllers.append(controller)
        return controller

    async def wait_issuers_checked(
        self, controller: Controller, count: int, wait_s: float = 60.0
    ) -> None:
        """Until this controller process has checked ``count`` issuers Ready
        (before that it would defer requests by 30 s)."""
        deadline = time.monotonic() + wait_s
        while await asyncio.to_thread(controller.metric, "akv_issuer_issuer_ready") < count:
            if not controller.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"issuers not checked:\n{controller.log_tail()}")
            await asyncio.sleep(0.05)

    def set_sign_latency(self, latency_ms: int) -> None:
        """Sign latency, and Key Vault's own per-vault throttle limits (preset azure)."""
        self.emulator.admin.set_faults(
            {
                "latency_ms": latency_ms,
                "latency_operations": ["sign"],
                "throttle": {"preset": "azure"},
            }
        )

    # -- CertificateRequests ------------------------------------------------

    async def create_requests(
        self,
        namespace: str,
        names: Sequence[str],
        csrs: Sequence[str],
        issuer_ref: dict[str, str],
        *,
        limit: int = 48,
    ) -> int:
        """Create the requests (not approved); the highest resourceVersion seen."""

        def job(i: int) -> Callable[[], Awaitable[int]]:
            async def create() -> int:
                obj = await self.kube.create(
                    CertificateRequest(
                        apiVersion="cert-manager.io/v1",
                        kind="CertificateRequest",
                        metadata=ObjectMeta(name=names[i], namespace=namespace),
                        spec={"request": csrs[i % len(csrs)], "issuerRef": issuer_ref},
                    )
                )
                return int(str(obj["metadata"]["resourceVersion"]))

            return create

        versions: list[int] = await bounded(limit, [job(i) for i in range(len(names))])
        return max(versions)

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], manager: str
    ) -> None:
        await self.kube.patch(
            CertificateRequest.Status,
            name,
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "CertificateRequest",
                "metadata": {"name": name, "namespace": namespace},
                "status": status,
            },
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=manager,
            force=True,
        )

    async def approve(self, namespace: str, name: str) -> None:
        """What cert-manager's approver writes (its own field manager)."""
        await self.apply_status(
            namespace,
            name,
            {"conditions": [condition("Approved", "True", "cert-manager.io")]},
            APPROVER,
        )

    async def delete_requests(self, namespace: str) -> None:
        with contextlib.suppress(ApiError):
            await self.kube.deletecollection(CertificateRequest, namespace=namespace)


# ---------------------------------------------------------------------------
# Many finished requests, fast


async def copy_through_etcd(
    etcd_url: str,
    template: dict[str, Any],
    namespace: str,
    names: Sequence[str],
    *,
    batch: int = 100,
    in_flight: int = 4,
) -> None:
    """Store a copy of ``template`` (a finished CertificateRequest as the API
    server returned it) under each name, straight into etcd.

    Why etcd and not the API server: 100,000 requests through the API server
    are 200,000 writes (create, then the status apply: a create never sets the
    status of a custom resource with a status subresource), ~6 min on a quiet
    2-core machine and far more on a loaded one, well over `make bench`'s budget.
    Custom resources are stored by kube-apiserver as plain JSON under
    ``/registry/<group>/<plural>/<namespace>/<name>`` (no protobuf, no
    encryption in the dev cluster), so a copy of a real object with a new name,
    uid and no resourceVersion is exactly what the API server would have stored;
    its watch cache picks the keys up from etcd's watch and the controller lists
    them through the API server like any others. etcd's JSON gateway takes up to
    128 operations per transaction (``--max-txn-ops``); ``batch`` stays below.
    """
    meta = dict(template["metadata"])
    for drop in ("resourceVersion", "selfLink"):
        meta.pop(drop, None)
    prefix = f"/registry/cert-manager.io/certificaterequests/{namespace}/"
    base = {**template, "metadata": meta}

    def encoded(name: str) -> dict[str, Any]:
        obj = {**base, "metadata": {**meta, "name": name, "uid": str(uuid.uuid4())}}
        return {
            "requestPut": {
                "key": base64.b64encode((prefix + name).encode()).decode(),
                "value": base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode(),
            }
        }

    async with httpx2.AsyncClient(base_url=etcd_url, timeout=120.0) as http:

        async def put(start: int) -> None:
            ops = [encoded(name) for name in names[start : start + batch]]
            response = await http.post("/v3/kv/txn", json={"success": ops})
            response.raise_for_status()

        await bounded(in_flight, [functools.partial(put, i) for i in range(0, len(names), batch)])
