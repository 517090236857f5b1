"""Pod certificates (issue 25) beside CertificateRequests, in the same run.

PodCertificateRequests are created straight against the API server, as a
node's kubelet creates them (a stub PKCS#10 request with a fresh EC P-256 key,
the Pod, ServiceAccount and node names and UIDs; no Pod or kubelet needed): a
namespaced Issuer with ``spec.podCertificates`` (a namespace selector, a SPIFFE
ID and a DNS name) signs them, the controller runs with ``--pod-certificates``
under a ClusterRole with the chart's ``controller.podCertificates`` rules. No
approval step: the request is actionable once created.

- trickle: one request at a time (create, wait for ``Issued``), ``samples``
  of them; latency = ``Issued`` seen - request seen, both on one watch (the
  CertificateRequest trickle: ``Ready=True`` seen - ``Approved`` seen);
- burst: N requests created at once (64 in flight); throughput = issued /
  (last ``Issued`` seen - first create sent); controller CPU (utime + stime)
  per certificate across it.

The CertificateRequest path runs the same trickle and burst (same N,
concurrency, 0 ms sign latency, EC P-256 CSRs, the same RSA-2048 CA key) right
after, each with a fresh controller process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from akv_issuer.controller.api import API_VERSION, GROUP, Issuer, signer_resource_name
from bench.csrs import csr_pems
from bench.env import CONTROLLER_NS, CONTROLLER_SA, MANAGER, BenchEnv, Controller, bounded
from bench.scenarios import burst, kv_summary, latency_summary, trickle

PodCertificateRequest = create_namespaced_resource(
    "certificates.k8s.io", "v1", "PodCertificateRequest", "podcertificaterequests"
)

NAMESPACE_LABEL = ("bench.azure-keyvault-issuer.test/pod-certificates", "allowed")
LIFETIME_S = 24 * 3600


def stub_requests(count: int) -> list[str]:
    """``count`` stub PKCS#10 requests (distinct EC P-256 keys), base64 of the DER."""
    return [
        base64.b64encode(
            x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
        ).decode()
        for pem in csr_pems(count)
    ]


class PCRWatch:
    """One namespace's PodCertificateRequests: when each was first seen, when Issued."""

    def __init__(self, env: BenchEnv, namespace: str, names: Sequence[str]) -> None:
        self.env = env
        self.namespace = namespace
        self.names = set(names)
        self.seen: dict[str, float] = {}
        self.issued: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.done = asyncio.Event()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _seen(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = str((obj.get("metadata") or {}).get("name"))
        if name not in self.names or name in self.issued or name in self.failed:
            return
        self.seen.setdefault(name, now)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Issued":
                self.issued[name] = now
            elif cond.get("type") in ("Denied", "Failed"):
                self.failed[name] = f"{cond.get('reason')}: {cond.get('message')}"
        if len(self.issued) + len(self.failed) >= len(self.names):
            self.done.set()

    async def _run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listed = self.env.kube.list(PodCertificateRequest, namespace=self.namespace)
                    async for obj in listed:
                        self._seen(dict(obj))
                    rv = str(listed.resourceVersion)
                self.ready.set()
                async for _, obj in self.env.kube.watch(
                    PodCertificateRequest, namespace=self.namespace, resource_version=rv
                ):
                    found = dict(obj)
                    rv = str(found["metadata"]["resourceVersion"])
                    self._seen(found)
            except ApiError:
                rv = None  # e.g. 410 Gone: list again
                await asyncio.sleep(0.1)
            except Exception:  # a network hiccup: resume from the last version seen
                await asyncio.sleep(0.1)

    async def wait(self, wait_s: float) -> None:
        try:
            await asyncio.wait_for(self.done.wait(), wait_s)
        except TimeoutError:
            missing = len(self.names) - len(self.issued) - len(self.failed)
            raise TimeoutError(
                f"{missing} of {len(self.names)} PodCertificateRequests not finished "
                f"after {wait_s:.0f}s"
            ) from None

    def latencies(self) -> list[float]:
        return [self.issued[n] - self.seen[n] for n in self.issued if n in self.seen]


async def grant_pod_certificates(env: BenchEnv) -> None:
    """The chart's controller.podCertificates rules, bound to the controller's
    ServiceAccount (config/rbac/role.yaml has the rest)."""
    role = ClusterRole(
        metadata=ObjectMeta(name="akv-bench-pod-certificates"),
        rules=[
            PolicyRule(
                apiGroups=["certificates.k8s.io"],
                resources=["podcertificaterequests"],
                verbs=["get", "list", "watch"],
            ),
            PolicyRule(
                apiGroups=["certificates.k8s.io"],
                resources=["podcertificaterequests/status"],
                verbs=["patch"],
            ),
            PolicyRule(
                apiGroups=["certificates.k8s.io"],
                resources=["signers"],
                resourceNames=[f"clusterissuers.{GROUP}/*", f"issuers.{GROUP}/*"],
                verbs=["sign"],
            ),
            PolicyRule(apiGroups=[""], resources=["namespaces"], verbs=["get"]),
        ],
    )
    await env.kube.apply(role, field_manager=MANAGER, force=True)
    await env.kube.apply(
        ClusterRoleBinding(
            metadata=ObjectMeta(name="akv-bench-pod-certificates"),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name="akv-bench-pod-certificates",
            ),
            subjects=[Subject(kind="ServiceAccount", name=CONTROLLER_SA, namespace=CONTROLLER_NS)],
        ),
        field_manager=MANAGER,
        force=True,
    )


async def pod_issuer(env: BenchEnv, namespace: str, name: str = "pods") -> str:
    """A labelled namespace and an Issuer in it that signs its Pods; its signer name."""
    await env.kube.create(
        Namespace(metadata=ObjectMeta(name=namespace, labels=dict([NAMESPACE_LABEL])))
    )
    await env.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={
                "keyVaultBaseURL": env.emulator.env.vault_url,
                "keyName": env.ca_name,
                "podCertificates": {
                    "namespaceSelector": {"matchLabels": dict([NAMESPACE_LABEL])},
                    "spiffeTrustDomain": "bench.test",
                    "dnsNames": ["$(POD_NAME).$(NAMESPACE).pod.bench.test"],
                    "keyTypes": ["ECDSAP256"],
                    "maxLifetime": "24h",
                },
            },
        )
    )
    return signer_resource_name("Issuer", name, namespace)


def _request(namespace: str, name: str, signer: str, stub: str, i: int) -> Any:
    return PodCertificateRequest(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec={
            "signerName": signer,
            "podName": f"app-{i}",
            "podUID": f"00000000-0000-4000-8000-{i:012d}",
            "serviceAccountName": "app",
            "serviceAccountUID": "00000000-0000-4000-8000-5e2e1cea0000",
            "nodeName": "bench-node",
            "nodeUID": "00000000-0000-4000-8000-0000000a0de0",
            "maxExpirationSeconds": LIFETIME_S,
            "stubPKCS10Request": stub,
        },
    )


async def _create(env: BenchEnv, namespace: str, names: Sequence[str], signer: str,
                  stubs: Sequence[str]) -> None:  # fmt: skip
    def job(i: int) -> Callable[[], Awaitable[Any]]:
        async def create() -> Any:
            body = _request(namespace, names[i], signer, stubs[i % len(stubs)], i)
            return await env.kube.create(body)

        return create

    await bounded(64, [job(i) for i in range(len(names))])


async def pod_trickle(
    env: BenchEnv, controller: Controller, namespace: str, signer: str,
    stubs: Sequence[str], samples: int,
) -> dict[str, Any]:  # fmt: skip
    """One PodCertificateRequest at a time: create, wait for Issued, next."""
    latencies: list[float] = []
    for i in range(samples):
        name = f"trickle-{i}"
        watch = PCRWatch(env, namespace, [name])
        watch.start()
        await asyncio.wait_for(watch.ready.wait(), 30)
        try:
            await _create(env, namespace, [name], signer, [stubs[i % len(stubs)]])
            await watch.wait(60)
        finally:
            await watch.stop()
        if watch.failed:
            raise RuntimeError(f"{name}: {watch.failed[name]}\n{controller.log_tail()}")
        latencies.extend(watch.latencies())
    return latency_summary(latencies)


async def pod_burst(
    env: BenchEnv, controller: Controller, namespace: str, signer: str,
    stubs: Sequence[str], n: int, wait_s: float,
) -> dict[str, Any]:  # fmt: skip
    """N PodCertificateRequests created at once (64 in flight), until all are Issued."""
    names = [f"burst-{i}" for i in range(n)]
    watch = PCRWatch(env, namespace, names)
    watch.start()
    await asyncio.wait_for(watch.ready.wait(), 30)
    env.emulator.admin.reset_counters()
    cpu0 = controller.cpu_seconds()
    started = time.monotonic()
    try:
        await _create(env, namespace, names, signer, stubs)
        await watch.wait(wait_s)
    finally:
        await watch.stop()
    cpu = controller.cpu_seconds() - cpu0
    issued = len(watch.issued)
    seconds = max(watch.issued.values(), default=started) - started
    return {
        "n": n,
        "issued": issued,
        "failed": len(watch.failed),
        "failures": sorted(set(watch.failed.values()))[:5],
        "seconds": seconds,
        "throughput_per_s": issued / seconds if seconds > 0 else None,
        "latency": latency_summary(watch.latencies()),
        "cpu_s": cpu,
        "cpu_ms_per_cert": cpu * 1000 / issued if issued else None,
        "rss_mib_hwm": controller.hwm_mib(),
        "kv": kv_summary(env.emulator.admin.counters(), env.emulator.admin.responses(), issued),
    }


async def pod_certificates_vs_certificate_requests(
    env: BenchEnv,
    issuer_in: Callable[[str], Awaitable[dict[str, str]]],
    csrs: Sequence[str],
    n: int,
    concurrency: int,
    samples: int,
    *,
    wait_s: float = 600.0,
) -> dict[str, Any]:
    """The Pod-certificate trickle and burst, then the CertificateRequest ones."""
    env.set_sign_latency(0)
    await grant_pod_certificates(env)
    stubs = await asyncio.to_thread(stub_requests, max(n, samples))
    result: dict[str, Any] = {"n": n, "concurrency": concurrency, "samples": samples}

    namespace = "bench-pods"
    signer = await pod_issuer(env, namespace)
    controller = env.start_controller(concurrency, extra=["--pod-certificates"])
    try:
        await asyncio.to_thread(controller.wait_ready)
        await env.wait_issuers_checked(controller, 1)
        result["pod"] = {
            "signer": signer,
            "trickle": await pod_trickle(env, controller, namespace, signer, stubs, samples),
            "burst": await pod_burst(env, controller, namespace, signer, stubs, n, wait_s),
        }
    finally:
        controller.stop()
    with contextlib.suppress(ApiError):
        await env.kube.deletecollection(PodCertificateRequest, namespace=namespace)

    # The CertificateRequest path, same sizes, same CA key, fresh controllers.
    cr_ns = await env.namespace("bench-pods-cr-trickle")
    ref = await issuer_in(cr_ns)
    controller = env.start_controller(concurrency)
    try:
        await asyncio.to_thread(controller.wait_ready)
        await env.wait_issuers_checked(controller, 1)
        cr_trickle = await trickle(env, controller, cr_ns, ref, csrs, samples, "cr-trickle")
    finally:
        controller.stop()
    cr_trickle.pop("status_payload", None)
    cr_burst = await burst(
        env, issuer_in, csrs, n, concurrency, 0, "bench-pods-cr-burst", wait_s=wait_s
    )
    result["certificate_request"] = {"trickle": cr_trickle, "burst": cr_burst}
    return result


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return float(a) / float(b)
    return None


def headline(found: dict[str, Any] | None) -> dict[str, float | None]:
    """The Pod-certificate keys of results.json from the scenario's result."""
    keys: dict[str, float | None] = dict.fromkeys(POD_KEYS)
    if not found or "pod" not in found:
        return keys
    pod, cr = found["pod"], found["certificate_request"]
    keys["pod_throughput_per_s"] = pod["burst"]["throughput_per_s"]
    keys["pod_latency_ms_p50"] = pod["trickle"]["p50_ms"]
    keys["pod_latency_ms_p99"] = pod["trickle"]["p99_ms"]
    keys["pod_cpu_ms_per_cert"] = pod["burst"]["cpu_ms_per_cert"]
    keys["pod_throughput_ratio_vs_cr"] = ratio(
        pod["burst"]["throughput_per_s"], cr["burst"]["throughput_per_s"]
    )
    keys["pod_latency_ratio_vs_cr"] = ratio(pod["trickle"]["p50_ms"], cr["trickle"]["p50_ms"])
    keys["pod_cpu_ratio_vs_cr"] = ratio(
        pod["burst"]["cpu_ms_per_cert"], cr["burst"]["cpu_ms_per_cert"]
    )
    return keys


POD_KEYS = (
    "pod_throughput_per_s",
    "pod_latency_ms_p50",
    "pod_latency_ms_p99",
    "pod_cpu_ms_per_cert",
    "pod_throughput_ratio_vs_cr",
    "pod_latency_ratio_vs_cr",
    "pod_cpu_ratio_vs_cr",
)
