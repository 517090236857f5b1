"""cert-manager's issuer conformance suite against our issuers, with
cert-manager's own CA issuer through the same specs as the baseline.

The specs are cert-manager's (``hack/cert-manager-conformance``, a Ginkgo test
binary built by ``make binaries``), run by ``akv_devcluster.conformance`` once
per issuer reference against the session's real cert-manager controller and
our controller:

- Certificates through our ClusterIssuer, and through a namespaced Issuer the
  binary creates in every spec's namespace; both with ``policy.allowCA``;
- Kubernetes CSRs for our ClusterIssuer's signer
  ``clusterissuers.<group>/<name>`` and for a namespaced Issuer's
  ``issuers.<group>/<namespace>.<name>`` (the Issuer made in every spec's
  namespace);
- the same four through cert-manager's ``ca`` ClusterIssuer / Issuer (CA key
  in a Secret) and its CSR signers ``clusterissuers.cert-manager.io/<name>``
  and ``issuers.cert-manager.io/<namespace>.<name>``.

A spec failing for both an issuer of ours and its baseline is the suite's
(listed in the output, not a failure of this test); one failing only for ours
fails the test. No feature is passed as unsupported (docs/e2e.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.core_v1 import Namespace, Secret

from akv_devcluster import DevCluster, conformance
from akv_devcluster import binaries as bins
from akv_devcluster.certmanager import (
    FEATURE_GATES,
    Certificate,
    CertManager,
    CMIssuer,
    make_local_ca,
)
from akv_issuer.controller.api import API_VERSION, GROUP, CertificateRequest, ClusterIssuer, Issuer
from support.controller_harness import Env, condition, wait_for

CMClusterIssuer = create_global_resource("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers")

# Longer than the 10000 h the CSR spec "signing CA certificate that has a large
# duration" asks for: a shorter CA would cut that certificate short (ours and
# cert-manager's CA issuer alike) and fail the spec's duration check for both.
CA_LIFETIME = dt.timedelta(days=3650)
# The gates the specs consult, as the session's cert-manager controller has
# them: its CSR signers on (certmanager.FEATURE_GATES), literal subjects on
# (the default since cert-manager 1.16).
SPEC_FEATURE_GATES = (*FEATURE_GATES, "LiteralCertificateSubject=true")
# Three binaries at a time on 2 cores (six at once are no faster: the runs then
# wait on the same cert-manager controller).
PARALLEL = 3


class Issuers:
    """The issuers under test and their baseline twins, made once."""

    def __init__(self, env: Env, cert_manager: CertManager) -> None:
        self.env = env
        self.kube = env.kube
        self.cert_manager = cert_manager
        suffix = uuid.uuid4().hex[:6]
        self.ours = f"conformance-akv-{suffix}"
        self.baseline = f"conformance-ca-{suffix}"
        self.baseline_secret = f"{self.baseline}-keypair"
        self.our_spec: dict[str, Any] = {}
        self.local_ca_pem: tuple[bytes, bytes] = (b"", b"")

    async def create(self) -> None:
        ca = await self.env.make_ca("RSA", lifetime=CA_LIFETIME)
        self.our_spec = self.env.issuer_spec(ca, policy={"allowCA": True})
        await self.env.create_issuer(self.ours, self.our_spec, cluster=True)
        await self.env.wait_issuer(self.ours, "True", cluster=True)

        local = make_local_ca("rsa-2048", lifetime=CA_LIFETIME)
        self.local_ca_pem = (local.cert_pem, local.key_pem)
        await self.kube.create(self._keypair_secret(self.cert_manager.cluster_resource_namespace))
        await self.kube.create(
            CMClusterIssuer(
                metadata=ObjectMeta(name=self.baseline),
                spec={"ca": {"secretName": self.baseline_secret}},
            )
        )

        async def baseline_ready() -> bool:
            ready = condition(dict(await self.kube.get(CMClusterIssuer, self.baseline)), "Ready")
            return ready is not None and ready.get("status") == "True"

        await wait_for(baseline_ready, what=f"cert-manager ClusterIssuer {self.baseline} Ready")

    def _keypair_secret(self, namespace: str) -> Secret:
        cert_pem, key_pem = self.local_ca_pem
        return Secret(
            metadata=ObjectMeta(name=self.baseline_secret, namespace=namespace),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(cert_pem).decode(),
                "tls.key": base64.b64encode(key_pem).decode(),
            },
        )

    def our_issuer_manifest(self) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": API_VERSION,
                "kind": "Issuer",
                "metadata": {"generateName": "akv-"},
                "spec": self.our_spec,
            }
        )

    def baseline_issuer_manifest(self) -> str:
        cert_pem, key_pem = self.local_ca_pem
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.baseline_secret},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert_pem).decode(),
                "tls.key": base64.b64encode(key_pem).decode(),
            },
        }
        issuer = {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": {"generateName": "ca-"},
            "spec": {"ca": {"secretName": self.baseline_secret}},
        }
        return yaml.safe_dump_all([secret, issuer])

    def pairs(self) -> list[tuple[conformance.Target, conformance.Target]]:
        """(ours, baseline) per issuer reference; no unsupported features."""
        return [
            (
                conformance.Target(
                    "AKV ClusterIssuer",
                    "certificates",
                    issuer_ref=f"{GROUP}/ClusterIssuer/{self.ours}",
                ),
                conformance.Target(
                    "CA ClusterIssuer",
                    "certificates",
                    issuer_ref=f"cert-manager.io/ClusterIssuer/{self.baseline}",
                ),
            ),
            (
                conformance.Target(
                    "AKV Issuer", "certificates", issuer_manifest=self.our_issuer_manifest()
                ),
                conformance.Target(
                    "CA Issuer", "certificates", issuer_manifest=self.baseline_issuer_manifest()
                ),
            ),
            (
                conformance.Target(
                    "AKV ClusterIssuer CSR signer",
                    "csr",
                    signer_name=f"clusterissuers.{GROUP}/{self.ours}",
                ),
                conformance.Target(
                    "CA ClusterIssuer CSR signer",
                    "csr",
                    signer_name=f"clusterissuers.cert-manager.io/{self.baseline}",
                ),
            ),
            (
                conformance.Target(
                    "AKV Issuer CSR signer",
                    "csr",
                    issuer_manifest=self.our_issuer_manifest(),
                    signer_name=f"issuers.{GROUP}/{{namespace}}.{{name}}",
                ),
                conformance.Target(
                    "CA Issuer CSR signer",
                    "csr",
                    issuer_manifest=self.baseline_issuer_manifest(),
                    signer_name="issuers.cert-manager.io/{namespace}.{name}",
                ),
            ),
        ]

    async def delete(self) -> None:
        with contextlib.suppress(ApiError):
            await self.kube.delete(ClusterIssuer, self.ours)
        with contextlib.suppress(ApiError):
            await self.kube.delete(CMClusterIssuer, self.baseline)
        with contextlib.suppress(ApiError):
            await self.kube.delete(
                Secret, self.baseline_secret, namespace=self.cert_manager.cluster_resource_namespace
            )


@pytest_asyncio.fixture
async def issuers(
    session_env: Env, cert_manager: CertManager, kube_client: AsyncClient
) -> AsyncIterator[Issuers]:
    made = Issuers(session_env, cert_manager)
    try:
        await made.create()
        yield made
    finally:
        await made.delete()
        await _sweep(kube_client, made)


async def _sweep(kube: AsyncClient, made: Issuers) -> None:
    """What an interrupted spec may have left: the framework's namespaces stay
    Terminating here (no kube-controller-manager), with their objects."""
    async for ns in kube.list(Namespace):
        name = ns.metadata.name if ns.metadata and ns.metadata.name else ""
        if not name.startswith("e2e-tests-"):
            continue
        for resource in (Certificate, CertificateRequest, Issuer, CMIssuer):
            with contextlib.suppress(ApiError):
                await kube.deletecollection(resource, namespace=name)
    signers = {
        f"clusterissuers.{GROUP}/{made.ours}",
        f"clusterissuers.cert-manager.io/{made.baseline}",
    }
    prefixes = (f"issuers.{GROUP}/e2e-tests-", "issuers.cert-manager.io/e2e-tests-")
    async for csr in kube.list(CertificateSigningRequest):
        signer = csr.spec.signerName
        if (
            (signer in signers or signer.startswith(prefixes))
            and csr.metadata
            and csr.metadata.name
        ):
            with contextlib.suppress(ApiError):
                await kube.delete(CertificateSigningRequest, csr.metadata.name)


@pytest.mark.timeout(1800)
async def test_cert_manager_conformance_suite(
    issuers: Issuers, devcluster: DevCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = bins.binary_path(bins.CERT_MANAGER_CONFORMANCE)
    if not bins.is_built(bins.CERT_MANAGER_CONFORMANCE):
        pytest.fail(
            f"cert-manager's conformance suite is not built ({binary}); run `make binaries`",
            pytrace=False,
        )
    pairs = issuers.pairs()
    targets = [target for pair in pairs for target in pair]
    kubectl = devcluster.kubectl_path
    started = time.monotonic()
    results = await asyncio.to_thread(
        conformance.run_targets,
        binary,
        targets,
        kubeconfig=devcluster.kubeconfig_path,
        workdir=tmp_path,
        parallel=PARALLEL,
        kubectl=kubectl,
        feature_gates=SPEC_FEATURE_GATES,
    )
    elapsed = time.monotonic() - started
    by_label = {r.target.label: r for r in results}

    point = bins.matrix_point()
    report = [
        f"cert-manager conformance suite ({bins.CONFORMANCE_VERSION} specs) on Kubernetes "
        f"{point.kubernetes} + cert-manager {point.cert_manager} ({point.name}), {elapsed:.0f} s"
    ]
    report += conformance.summary_lines(results)
    ours_only: list[str] = []
    for ours, baseline in pairs:
        comparison = conformance.compare(by_label[ours.label], by_label[baseline.label])
        for text in comparison.suite_failures:
            report.append(f"  suite's failure (fails for {baseline.label} too): {text}")
        for spec in comparison.our_failures:
            ours_only.append(f"{ours.label}: {spec.text}\n    {spec.failure[:1500]}")
        # Same feature sets on both sides: the same specs ran.
        assert comparison.only_ours == comparison.only_baseline == [], comparison
    with capsys.disabled():
        print("\n" + "\n".join(report))
    (tmp_path / "summary.txt").write_text("\n".join(report) + "\n")

    for result in results:
        counts = result.counts()
        # Every run defined and passed specs (a run that defined nothing, or a
        # baseline that passes nothing, would make the comparison vacuous).
        assert counts["passed"] > 0, f"{result.target.label}: {counts}\n{result.output_tail}"
        # The baseline passes all but a few: what fails for it too is the
        # suite's, so a broken baseline must not hide our failures.
        if not result.target.label.startswith("AKV"):
            assert counts["failed"] <= 2, f"baseline {result.target.label}: {counts}"
    assert not ours_only, "specs failing for our issuers only:\n" + "\n".join(ours_only)
