"""The chaos suite's world: bench's (control plane, emulator, CA, controller
processes) plus what faults need.

- Replicas: controller processes with leader election, each talking to the
  API server through its own :class:`~akv_devcluster.faultproxy.FaultProxy`
  (so one replica alone can be partitioned) and naming itself to Key Vault in
  its User-Agent (``AZURE_HTTP_USER_AGENT``), so the emulator's sign log says
  which replica signed what. A supervisor restarts a replica that exits, as
  the kubelet restarts a pod (a leader that loses its Lease exits non-zero).
- The control plane's own processes: SIGKILL and restart etcd or the API
  server with the same arguments (same ports, same data), optionally with
  extra flags (``--watch-cache=false`` for 410 Gone).
- etcd compaction through its gRPC gateway (``/v3/kv/compaction``).
- The accounting every scenario shares (:func:`account`): requests created,
  issued, failed, lost, and signatures Key Vault delivered that are not the
  certificate written (each one a request signed more than once).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from lightkube import ApiError
from lightkube.resources.coordination_v1 import Lease

from akv_devcluster.cluster import _http_ok
from akv_devcluster.faultproxy import FaultProxy
from akv_devcluster.process import ProcessSpec
from akv_issuer.controller.api import CertificateRequest
from bench.env import CONTROLLER_NS, BenchEnv, Controller, bounded

LEASE_NAME = "azure-keyvault-issuer-leader"
# Shorter than the 15 s / 10 s / 2 s defaults so takeovers fit the time budget.
FAST_LEASE = ("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")


@dataclass
class Replica:
    name: str
    proxy: FaultProxy
    kubeconfig: Path
    concurrency: int
    extra: tuple[str, ...]
    generation: int = 0
    controller: Controller | None = None
    wanted: bool = True
    restarts: int = 0
    exits: list[int | None] = field(default_factory=list)

    @property
    def identity(self) -> str:
        return f"{self.name}-{self.generation}"

    def alive(self) -> bool:
        return self.controller is not None and self.controller.alive()


class World:
    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.replicas: dict[str, Replica] = {}
        self._supervisor: asyncio.Task[None] | None = None

    # -- replicas ---------------------------------------------------------------

    def _proxied_kubeconfig(self, name: str, port: int) -> Path:
        config = yaml.safe_load(self.env.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
        path = self.env.work / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def add_replica(
        self, name: str, concurrency: int, extra: Sequence[str] = FAST_LEASE
    ) -> Replica:
        server = urlsplit(self.env.cluster.server_url)
        assert server.hostname is not None
        assert server.port is not None
        proxy = FaultProxy(server.hostname, server.port)
        port = proxy.start()
        replica = Replica(
            name, proxy, self._proxied_kubeconfig(name, port), concurrency, tuple(extra)
        )
        self.replicas[name] = replica
        self._spawn(replica)
        return replica

    def _spawn(self, replica: Replica) -> None:
        replica.generation += 1
        replica.controller = self.env.start_controller(
            replica.concurrency,
            # No CRL endpoint: two replicas on one host would share its port.
            extra=[
                "--leader-election-identity",
                replica.identity,
                "--crl-bind-address",
                "0",
                *replica.extra,
            ],
            kubeconfig=replica.kubeconfig,
            environ={"AZURE_HTTP_USER_AGENT": f"chaos-replica/{replica.identity}"},
        )

    def kill(self, replica: Replica, sig: int = signal.SIGKILL) -> None:
        """Kill it; the supervisor restarts it (as a pod would be)."""
        if replica.controller is not None and replica.controller.alive():
            replica.controller.process.send_signal(sig)

    def start_supervisor(self, delay: float = 0.5) -> None:
        async def supervise() -> None:
            while True:
                for replica in self.replicas.values():
                    controller = replica.controller
                    if replica.wanted and controller is not None and not controller.alive():
                        replica.exits.append(controller.process.returncode)
                        replica.restarts += 1
                        await asyncio.sleep(delay)
                        self._spawn(replica)
                await asyncio.sleep(0.1)

        self._supervisor = asyncio.get_running_loop().create_task(supervise())

    async def stop_replicas(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for replica in self.replicas.values():
            replica.wanted = False
            replica.proxy.heal()
            if replica.controller is not None:
                await asyncio.to_thread(replica.controller.stop, 30)
            replica.proxy.stop()
        self.replicas.clear()

    async def leader(self) -> Replica | None:
        """The replica whose identity holds the Lease now (None if nobody/unknown)."""
        try:
            lease = await self.env.kube.get(Lease, LEASE_NAME, namespace=CONTROLLER_NS)
        except Exception:
            return None
        holder = str(lease.spec.holderIdentity or "") if lease.spec else ""
        for replica in self.replicas.values():
            if replica.identity == holder and replica.alive():
                return replica
        return None

    async def wait_leader(self, wait_s: float = 60.0) -> Replica:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            found = await self.leader()
            if found is not None and found.controller is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    if await asyncio.to_thread(found.controller.metric, "akv_issuer_leader"):
                        return found
            await asyncio.sleep(0.2)
        raise RuntimeError("no replica leads")

    def rss_mib(self) -> float:
        """VmRSS summed over the live replicas."""
        total = 0.0
        for replica in self.replicas.values():
            if replica.controller is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    total += replica.controller.rss_mib()
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for replica in self.replicas.values():
            if replica.controller is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    total += replica.controller.cpu_seconds()
        return total

    # -- the control plane's processes -------------------------------------------

    def kill_component(self, name: str) -> tuple[str, ...]:
        """SIGKILL etcd or kube-apiserver; its argv, for :meth:`restart_component`."""
        group = self.env.cluster.processes
        record = group.get(name)
        if record is None:
            raise RuntimeError(f"no {name} process")
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        group.stop(name, timeout=10)  # reaps it, forgets the record
        return tuple(record.argv)

    def restart_component(
        self, name: str, argv: Sequence[str], extra: Sequence[str] = (), timeout: float = 90.0
    ) -> float:
        """Start it again with the same arguments (plus ``extra``); seconds until ready."""
        started = time.monotonic()
        cluster = self.env.cluster
        args = [a for a in argv if not any(a.startswith(e.split("=")[0] + "=") for e in extra)]
        spec = ProcessSpec(name, [*args, *extra])
        ready: Callable[[], bool]
        if name == "etcd":
            ready = functools.partial(_http_ok, f"{cluster.etcd_url}/health")
        else:
            ready = cluster._readyz
        cluster.start_process(spec, ready, timeout=timeout)
        return time.monotonic() - started

    def etcd_revision(self) -> int:
        reply = self._etcd("range", {"key": base64.b64encode(b"\0").decode()})
        return int(reply["header"]["revision"])

    def etcd_compact(self, revision: int) -> None:
        self._etcd("compaction", {"revision": str(revision), "physical": True})

    def _etcd(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the dev cluster's etcd on loopback
            f"{self.env.cluster.etcd_url}/v3/kv/{call}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read())
        return result


# ---------------------------------------------------------------------------
# Requests and their accounting


async def retrying(what: str, call: Any, *, wait_s: float = 120.0) -> Any:
    """Call ``call()`` until it succeeds (the API server may be down)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await call()
        except ApiError as exc:
            if exc.status.code in (409, 404, 422, 403) or time.monotonic() > deadline:
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: API server unreachable for {wait_s:.0f}s") from None
        await asyncio.sleep(0.5)


async def approve_all(env: BenchEnv, namespace: str, names: Sequence[str]) -> None:
    async def one(name: str) -> None:
        await retrying(f"approve {name}", functools.partial(env.approve, namespace, name))

    await bounded(32, [functools.partial(one, n) for n in names])


def request_state(obj: dict[str, Any]) -> tuple[str, str]:
    """('issued'|'failed'|'denied'|'pending', reason/message)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return "issued", "Issued"
            if cond.get("reason") == "Failed":
                return "failed", str(cond.get("message") or "")
            if cond.get("reason") == "Denied":
                return "denied", str(cond.get("message") or "")
    return "pending", ""


@dataclass
class Settled:
    objects: dict[str, dict[str, Any]]
    finished_at: dict[str, float]  # name -> monotonic time it was first seen finished
    complete: bool

    def by_state(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"issued": [], "failed": [], "denied": [], "pending": []}
        for name, obj in self.objects.items():
            out[request_state(obj)[0]].append(name)
        return out


async def settle(
    env: BenchEnv, namespace: str, names: Sequence[str], wait_s: float, poll: float = 1.0
) -> Settled:
    """List the namespace until every request is finished or ``wait_s`` passes."""
    wanted = set(names)
    finished_at: dict[str, float] = {}
    objects: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(Exception):
            found: dict[str, dict[str, Any]] = {}
            async for item in env.kube.list(CertificateRequest, namespace=namespace):
                obj = dict(item)
                name = str(obj["metadata"]["name"])
                if name in wanted:
                    found[name] = obj
            objects.update(found)
            now = time.monotonic()
            for name, obj in found.items():
                if request_state(obj)[0] != "pending":
                    finished_at.setdefault(name, now)
        if len(finished_at) >= len(wanted):
            return Settled(objects, finished_at, True)
        if time.monotonic() > deadline:
            return Settled(objects, finished_at, False)
        await asyncio.sleep(poll)


def _digest(cert: x509.Certificate) -> str:
    algorithm = cert.signature_hash_algorithm or hashes.SHA256()
    h = hashes.Hash(algorithm)
    h.update(cert.tbs_certificate_bytes)
    return base64.urlsafe_b64encode(h.finalize()).decode().rstrip("=")


def _norm(digest: str) -> str:
    return digest.rstrip("=")


def account(
    settled: Settled, names: Sequence[str], sign_log: list[dict[str, Any]], ca_pem: bytes
) -> dict[str, Any]:
    """Created, issued, failed, lost and signed-more-than-once for one scenario.

    Each request has its own CSR (its own key). A written certificate must
    carry that request's key and verify under the CA; its TBS digest must be
    in the sign log. A signature Key Vault *delivered* whose digest is no
    written certificate's is a certificate that exists for no request: a
    request signed twice (by two replicas, or again after a crash or an
    ambiguous failure). Signatures the emulator made but never delivered
    (a fault cut the answer) are counted apart.
    """
    ca = x509.load_pem_x509_certificate(ca_pem)
    states = settled.by_state()
    written: dict[str, str] = {}  # digest -> request
    bad_certs: list[str] = []
    for name in states["issued"]:
        status = settled.objects[name].get("status") or {}
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(status["certificate"]))
            csr = x509.load_pem_x509_csr(base64.b64decode(settled.objects[name]["spec"]["request"]))
            cert.verify_directly_issued_by(ca)
            if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != csr.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise ValueError("certificate key is not the CSR's")
        except Exception as exc:
            bad_certs.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        written[_digest(cert)] = name
    delivered: dict[str, int] = {}
    undelivered = 0
    signers: dict[str, set[str]] = {}
    for record in sign_log:
        digest = _norm(str(record["digest"]))
        if record.get("delivered", True):
            delivered[digest] = delivered.get(digest, 0) + 1
        else:
            undelivered += 1
        if digest in written:
            signers.setdefault(written[digest], set()).add(str(record.get("user_agent", "")))
    extra_delivered = sum(count for digest, count in delivered.items() if digest not in written)
    repeated_same = sum(count - 1 for digest, count in delivered.items() if digest in written)
    missing = [name for digest, name in written.items() if digest not in delivered]
    undelivered_unwritten = sum(
        1
        for record in sign_log
        if not record.get("delivered", True) and _norm(str(record["digest"])) not in written
    )
    lost = [n for n in names if n not in settled.finished_at]
    return {
        "created": len(names),
        "issued": len(states["issued"]),
        "failed": len(states["failed"]) + len(states["denied"]),
        "lost": len(lost),
        # Delivered or not, each signature of a TBS that is not the request's
        # written certificate is a second certificate made for some request.
        "signed_more_than_once": extra_delivered + undelivered_unwritten,
        "extra_signatures_delivered": extra_delivered,
        "signatures": len(sign_log),
        "same_certificate_signed_again": repeated_same,
        "signed_not_delivered": undelivered,
        "signed_not_delivered_not_written": undelivered_unwritten,
        "written_without_sign_log_entry": len(missing),
        "bad_certificates": bad_certs[:20],
        "bad_certificate_count": len(bad_certs),
        "failed_examples": sorted(
            {request_state(settled.objects[n])[1][:200] for n in states["failed"]}
        )[:10],
        "lost_examples": lost[:10],
        "requests_signed_by_two_replicas": sum(1 for s in signers.values() if len(s) > 1),
    }


def signer_of(record: dict[str, Any]) -> str:
    """The replica identity in a sign-log record's User-Agent (chaos-replica/<id>)."""
    agent = str(record.get("user_agent", ""))
    for part in agent.split():
        if part.startswith("chaos-replica/"):
            return part.split("/", 1)[1]
    return ""
