"""Certificates issued end to end: cert-manager's real controller creates the
key, the CSR and the CertificateRequest, approves it, and writes the Secret;
our controller signs with the Key Vault emulator."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.types import PatchType

from akv_devcluster.certmanager import NAMESPACE, SERVICE_ACCOUNT
from akv_issuer.controller.api import API_VERSION, GROUP, Issuer
from support.controller_harness import condition
from support.e2e_harness import E2E, shared_ca

SANS: dict[str, Any] = {
    "dnsNames": ["app.example.com", "www.app.example.com"],
    "ipAddresses": ["10.1.2.3", "2001:db8::7"],
    "uris": ["spiffe://cluster.local/ns/app/sa/web"],
    "emailAddresses": ["ops@example.com"],
}


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _check_sans(cert: x509.Certificate) -> None:
    sans = _sans(cert)
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(SANS["dnsNames"])
    assert sorted(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)) == sorted(
        str(ipaddress.ip_address(ip)) for ip in SANS["ipAddresses"]
    )
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == SANS["uris"]
    assert sans.get_values_for_type(x509.RFC822Name) == SANS["emailAddresses"]


@pytest.mark.parametrize(
    ("algorithm", "size", "key_check"),
    [
        ("RSA", 2048, lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
        (
            "ECDSA",
            256,
            lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp256r1",
        ),
        (
            "ECDSA",
            384,
            lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1",
        ),
        ("Ed25519", None, lambda k: isinstance(k, ed25519.Ed25519PublicKey)),
    ],
    ids=["rsa-2048", "ecdsa-p256", "ecdsa-p384", "ed25519"],
)
async def test_certificate_through_issuer(
    e2e: E2E, algorithm: str, size: int | None, key_check: Any
) -> None:
    ca = await shared_ca(e2e.env, "RSA", size=2048)
    ref = await e2e.issuer(ca)
    private_key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        private_key["size"] = size
    await e2e.create_certificate(
        "web",
        ref,
        secretName="web-tls",
        commonName="app.example.com",
        privateKey=private_key,
        **SANS,
    )
    cert = await e2e.wait_ready("web")
    issued = await e2e.check_secret("web-tls")

    assert issued.ca_pem.strip() == ca.pem.strip()
    assert key_check(issued.leaf.public_key())
    assert issued.leaf.issuer == ca.cert.subject
    assert issued.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "app.example.com"
    )
    _check_sans(issued.leaf)
    # cert-manager's own view agrees with the Secret.
    assert cert["status"]["notAfter"] == issued.leaf.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    (request,) = await e2e.requests_for("web")
    assert condition(request, "Approved")["status"] == "True"
    assert condition(request, "Ready")["reason"] == "Issued"


async def test_certificate_through_cluster_issuer_with_literal_subject_duration_and_usages(
    e2e: E2E,
) -> None:
    ca = await shared_ca(e2e.env, "EC", curve="P-384")
    ref = await e2e.issuer(ca, cluster=True)
    literal = "CN=payments,OU=Platform+OU=PKI,O=Example Corp,L=Berlin,C=DE"
    await e2e.create_certificate(
        "payments",
        ref,
        secretName="payments-tls",
        commonName=None,
        literalSubject=literal,
        dnsNames=["payments.example.com"],
        duration="49h",
        renewBefore="12h",
        usages=["digital signature", "key encipherment", "server auth", "client auth"],
        privateKey={"algorithm": "ECDSA", "size": 256},
    )
    await e2e.wait_ready("payments")
    issued = await e2e.check_secret("payments-tls")
    leaf = issued.leaf

    assert leaf.issuer == ca.cert.subject
    # Byte for byte the subject cert-manager encoded from the literal.
    assert leaf.subject == x509.Name.from_rfc4514_string(literal)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=49)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    # Requested, but an ECDSA key MUST NOT have it (RFC 8813 section 3):
    # left out (docs/api.md "Key usages"), the request is still issued.
    assert not ku.key_encipherment
    assert not ku.key_cert_sign
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


async def test_is_ca_certificate_needs_the_issuer_policy(e2e: E2E) -> None:
    ca = await shared_ca(e2e.env, "RSA", size=2048)
    strict = await e2e.issuer(ca)
    await e2e.create_certificate(
        "sub-ca-refused", strict, secretName="sub-ca-refused", commonName="Team Sub CA", isCA=True
    )

    def failed(obj: dict[str, Any]) -> bool:
        issuing = condition(obj, "Issuing")
        return (
            issuing is not None and issuing["status"] == "False" and (issuing["reason"] == "Failed")
        )

    refused = await e2e.wait_certificate("sub-ca-refused", failed, "Issuing=False/Failed")
    assert refused["status"].get("lastFailureTime")
    assert condition(refused, "Ready")["status"] == "False"
    (request,) = await e2e.requests_for("sub-ca-refused")
    ready = condition(request, "Ready")
    assert ready["reason"] == "Failed"
    assert "isCA" in ready["message"] or "allowCA" in ready["message"]
    assert request["status"].get("failureTime")
    assert "certificate" not in request["status"]

    permissive = await e2e.issuer(ca, policy={"allowCA": True, "maxPathLength": 0})
    await e2e.create_certificate(
        "sub-ca", permissive, secretName="sub-ca", commonName="Team Sub CA", isCA=True
    )
    await e2e.wait_ready("sub-ca")
    issued = await e2e.check_secret("sub-ca")
    basic = issued.leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    assert basic.path_length == 0
    assert issued.leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


async def test_issuer_not_ready_shows_on_the_certificate_and_recovers(e2e: E2E) -> None:
    ca = await shared_ca(e2e.env, "RSA", size=2048)
    name = "not-yet"
    # An issuer whose Key Vault key does not exist: never Ready.
    await e2e.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name=name, namespace=e2e.namespace),
            spec={"keyVaultBaseURL": e2e.env.emulator.env.vault_url, "keyName": "no-such-key"},
        )
    )
    await e2e.wait_issuer(name, "Issuer", "False")
    ref = {"name": name, "kind": "Issuer", "group": GROUP}
    await e2e.create_certificate("waiting", ref, secretName="waiting-tls")

    async def pending() -> bool:
        requests = await e2e.requests_for("waiting")
        ready = condition(requests[0], "Ready") if requests else None
        return ready is not None and ready["reason"] == "Pending"

    await e2e.wait(pending, "the request to be Pending on the issuer")
    (request,) = await e2e.requests_for("waiting")
    message = condition(request, "Ready")["message"]
    assert "IssuerNotReady" in message or "not ready" in message.lower()
    cert = await e2e.get_certificate("waiting")
    assert condition(cert, "Ready")["status"] == "False"
    issuing = condition(cert, "Issuing")
    assert issuing is not None
    assert issuing["status"] == "True", "a not-Ready issuer must not fail the Certificate"
    assert not cert["status"].get("lastFailureTime")

    # Point the issuer at a real CA: the same request is signed, no re-create.
    await e2e.kube.patch(
        Issuer,
        name,
        {"spec": {"keyName": ca.name}},
        namespace=e2e.namespace,
        patch_type=PatchType.MERGE,
    )
    await e2e.wait_ready("waiting")
    await e2e.check_secret("waiting-tls")
    assert len(await e2e.requests_for("waiting")) == 1


async def test_cert_manager_may_approve_for_our_issuers_through_our_rbac_only(e2e: E2E) -> None:
    """The check cert-manager's webhook makes before it lets a user set
    Approved/Denied: ``approve`` on ``signers`` for ``<resource>.<group>/*``
    or for the named issuer. cert-manager's ServiceAccount passes it for our
    group only through config/rbac's approver role (its chart grants only
    cert-manager.io), and not for an unrelated external issuer group."""
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"

    async def allowed(signer: str) -> bool:
        review = await e2e.kube.create(
            SubjectAccessReview(
                spec=SubjectAccessReviewSpec(
                    user=user,
                    groups=["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
                    resourceAttributes=ResourceAttributes(
                        group="cert-manager.io", resource="signers", verb="approve", name=signer
                    ),
                )
            )
        )
        return bool(review.status and review.status.allowed)

    async def may_approve(resource: str, group: str, name: str) -> bool:
        # As the webhook does: the wildcard signer name, or the specific one.
        return await allowed(f"{resource}.{group}/*") or await allowed(f"{resource}.{group}/{name}")

    assert await may_approve("issuers", GROUP, f"{e2e.namespace}.team-ca")
    assert await may_approve("clusterissuers", GROUP, "org-ca")
    assert await may_approve("issuers", "cert-manager.io", f"{e2e.namespace}.ca")
    assert not await may_approve("issuers", "other-issuer.example.com", f"{e2e.namespace}.x")
    assert not await may_approve("clusterissuers", "other-issuer.example.com", "x")
