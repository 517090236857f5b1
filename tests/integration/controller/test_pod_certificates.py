"""PodCertificateRequests (certificates.k8s.io/v1) against a real kube-apiserver
1.37, signed by a ClusterIssuer with ``spec.podCertificates``.

The requests are created as a kubelet would create them (a real key, an empty
stub PKCS#10 request signed with it); the controller runs with
``--pod-certificates`` under the shipped rules (the kustomize component
config/components/pod-certificates, the same as the chart's
``controller.podCertificates``), so the API server's own checks -- ``sign`` on
the signer name, the status rules of a PodCertificateRequest (one terminal
condition, NotBefore near its clock, lifetime within maxExpirationSeconds,
beginRefreshAt's margins, the key) -- are part of every test. The issued chain
is verified with ``openssl verify`` against the CA.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lightkube.models.certificates_v1 import PodCertificateRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.certificates_v1 import PodCertificateRequest
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from akv_issuer.controller.api import GROUP
from support.controller_harness import Env, csr_pem, wait_for

COMPONENT = Path(__file__).resolve().parents[3] / "config/components/pod-certificates"


def shipped_rules() -> list[PolicyRule]:
    """The rules config/components/pod-certificates adds to the manager role."""
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    (role_patch,) = [p for p in component["patches"] if p["target"]["kind"] == "ClusterRole"]
    return [PolicyRule.from_dict(op["value"]) for op in yaml.safe_load(role_patch["patch"])]


def stub_csr(key: Any) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


class PodRequests:
    """Creates PodCertificateRequests as a kubelet would and reads them back."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.names: list[str] = []

    async def create(
        self, name: str, signer: str, key: Any, *, account: str = "web", seconds: int = 86400
    ) -> str:
        await self.env.kube.create(
            PodCertificateRequest(
                metadata=ObjectMeta(name=name, namespace=self.env.namespace),
                spec=PodCertificateRequestSpec(
                    signerName=signer,
                    podName=f"{name}-pod",
                    podUID=str(uuid.uuid4()),
                    serviceAccountName=account,
                    serviceAccountUID=str(uuid.uuid4()),
                    nodeName="node-1",
                    nodeUID=str(uuid.uuid4()),
                    maxExpirationSeconds=seconds,
                    stubPKCS10Request=stub_csr(key),
                ),
            )
        )
        self.names.append(name)
        return name

    async def get(self, name: str) -> dict[str, Any]:
        found = await self.env.kube.get(PodCertificateRequest, name, namespace=self.env.namespace)
        result: dict[str, Any] = found.to_dict()
        return result

    async def wait_terminal(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.clear()
            found.update(await self.get(name))
            return bool((found.get("status") or {}).get("conditions"))

        await wait_for(check, what=f"PodCertificateRequest {name} answered", env=self.env)
        return found

    async def delete_all(self) -> None:
        for name in self.names:
            with contextlib.suppress(Exception):  # best-effort cleanup of a test object
                await self.env.kube.delete(
                    PodCertificateRequest, name, namespace=self.env.namespace
                )


@pytest_asyncio.fixture
async def pods(env: Env) -> AsyncIterator[PodRequests]:
    made = PodRequests(env)
    role = f"akv-tests-pod-certificates-{uuid.uuid4().hex[:6]}"
    await env.kube.create(ClusterRole(metadata=ObjectMeta(name=role), rules=shipped_rules()))
    await env.kube.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=role),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[Subject(kind="ServiceAccount", name=env.account, namespace=env.namespace)],
        )
    )
    try:
        yield made
    finally:
        await made.delete_all()
        await env.kube.delete(ClusterRoleBinding, role)
        await env.kube.delete(ClusterRole, role)


def _terminal(obj: dict[str, Any]) -> tuple[str, str, str]:
    (only,) = obj["status"]["conditions"]
    assert only["status"] == "True"
    return only["type"], only["reason"], only["message"]


async def test_pod_certificates_are_issued_and_refused_as_the_policy_says(
    env: Env, pods: PodRequests
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    name = f"pods-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(
        name,
        env.issuer_spec(
            ca,
            podCertificates={
                "namespaceSelector": {"matchLabels": {"pod-tls.example.com/enabled": "true"}},
                "serviceAccounts": ["web"],
                "spiffeTrustDomain": "cluster.example.com",
                "dnsNames": ["$(SERVICE_ACCOUNT).$(NAMESPACE).svc"],
                "keyTypes": ["ECDSAP256", "ECDSAP384"],
                "maxLifetime": "12h",
            },
        ),
        cluster=True,
    )
    await env.kube.patch(
        Namespace,
        env.namespace,
        {"metadata": {"labels": {"pod-tls.example.com/enabled": "true"}}},
    )
    signer = f"clusterissuers.{GROUP}/{name}"
    controller = env.start_controller("--pod-certificates")
    await env.wait_issuer(name, "True", cluster=True)
    signs_before = env.sign_calls()

    key = ec.generate_private_key(ec.SECP256R1())
    allowed = await pods.create("allowed", signer, key)
    other_account = await pods.create("other-sa", signer, key, account="batch")
    rsa_key = await pods.create("rsa", signer, rsa.generate_private_key(65537, 3072))
    not_ours = await pods.create("not-ours", "example.com/someone-else", key)

    issued = await pods.wait_terminal(allowed)
    assert _terminal(issued)[:2] == ("Issued", "Issued")
    chain = issued["status"]["certificateChain"]
    leaf = env.openssl_verify_against(
        {"status": {"certificate": base64.b64encode(chain.encode()).decode()}}, ca.pem
    )
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://cluster.example.com/ns/{env.namespace}/sa/web"
    ]
    assert san.get_values_for_type(x509.DNSName) == [f"web.{env.namespace}.svc"]
    # The API server took notBefore/notAfter/beginRefreshAt as they are.
    assert issued["status"]["notAfter"] == leaf.not_valid_after_utc.isoformat().replace(
        "+00:00", "Z"
    )
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 12 * 3600

    assert _terminal(await pods.wait_terminal(other_account))[:2] == (
        "Denied",
        "ServiceAccountNotAllowed",
    )
    kind, reason, message = _terminal(await pods.wait_terminal(rsa_key))
    assert (kind, reason) == ("Denied", "UnsupportedKeyType")
    assert "key type RSA3072 is not allowed" in message
    assert "one of ECDSAP256, ECDSAP384" in message

    # Another signer's request is left alone; one signature in all.
    assert not (await pods.get(not_ours)).get("status", {}).get("conditions")
    assert env.sign_calls() - signs_before == 1
    assert (
        controller.metric(
            "akv_issuer_requests_finished_total",
            request_kind="PodCertificateRequest",
            outcome="Denied",
        )
        == 2
    )


async def test_a_namespace_the_selector_does_not_match_is_denied(
    env: Env, pods: PodRequests
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    name = f"pods-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(
        name,
        env.issuer_spec(
            ca,
            podCertificates={
                "namespaceSelector": {"matchLabels": {"pod-tls.example.com/enabled": "true"}},
                "spiffeTrustDomain": "cluster.example.com",
            },
        ),
        cluster=True,
    )
    env.start_controller("--pod-certificates")
    await env.wait_issuer(name, "True", cluster=True)
    signs_before = env.sign_calls()

    request = await pods.create(
        "elsewhere", f"clusterissuers.{GROUP}/{name}", ec.generate_private_key(ec.SECP256R1())
    )
    kind, reason, message = _terminal(await pods.wait_terminal(request))
    assert (kind, reason) == ("Denied", "NamespaceNotAllowed")
    assert f"namespace {env.namespace} does not match" in message
    assert env.sign_calls() == signs_before


async def test_without_the_rules_the_controller_says_so_once_and_serves_the_rest(
    env: Env,
) -> None:
    """--pod-certificates under a ClusterRole without the PodCertificateRequest
    rules (as on a cluster whose RBAC was not updated): one warning, no
    crash-loop, ready, and the other kinds still signed."""
    ca = await env.make_ca("EC", curve="P-256")
    name = f"pods-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(name, env.issuer_spec(ca), cluster=True)
    controller = env.start_controller("--pod-certificates")
    await env.wait_ready(controller)
    await env.wait_issuer(name, "True", cluster=True)

    await env.create_request("still-signed", csr_pem("ec"), name, kind="ClusterIssuer")
    await env.approve("still-signed")
    issued = await env.wait_request("still-signed", "Issued")
    env.openssl_verify(issued, ca)

    warnings = [
        line
        for line in controller.log().splitlines()
        if "may not list podcertificaterequests" in line
    ]
    assert len(warnings) == 1, warnings
    assert "controller.podCertificates=true" in warnings[0]
    assert controller.alive()
