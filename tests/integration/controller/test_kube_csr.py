"""Kubernetes CertificateSigningRequests (certificates.k8s.io/v1) signed by a
ClusterIssuer, or by a namespaced Issuer for requesters who may reference it:
approved ones get a certificate that verifies, everything else is left alone
or ends Failed with the documented reason. The controller runs under the
shipped ClusterRole, so the API server's own check that a signer may sign for
a signerName, and its answers to the controller's SubjectAccessReviews, are
part of every test."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from cryptography import x509
from lightkube import AsyncClient
from lightkube.models.certificates_v1 import (
    CertificateSigningRequestCondition,
    CertificateSigningRequestSpec,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.certificates_v1 import (
    CertificateSigningRequest,
    CertificateSigningRequestApproval,
)
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)

from akv_issuer.controller.api import GROUP
from akv_issuer.pki.usages import key_usage_bits
from support.controller_harness import CA, Env, condition, csr_pem, wait_for


class CSRs:
    """Creates CSRs with unique names (they are cluster-scoped) and deletes them."""

    def __init__(self, kube: AsyncClient) -> None:
        self.kube = kube
        self.names: list[str] = []
        self.prefix = f"kcsr-{uuid.uuid4().hex[:6]}"

    async def create(
        self,
        suffix: str,
        signer: str,
        *,
        usages: list[str] | None = None,
        expiration_seconds: int | None = None,
        annotations: dict[str, str] | None = None,
        request: bytes | None = None,
        as_client: AsyncClient | None = None,
    ) -> str:
        """A CSR named after ``suffix``, created by the admin or ``as_client``
        (the API server records that client's identity as the requester)."""
        name = f"{self.prefix}-{suffix}"
        self.names.append(name)
        await (as_client or self.kube).create(
            CertificateSigningRequest(
                metadata=ObjectMeta(name=name, annotations=annotations),
                spec=CertificateSigningRequestSpec(
                    request=base64.b64encode(request or csr_pem("ec")).decode(),
                    signerName=signer,
                    usages=usages or ["digital signature", "key encipherment", "server auth"],
                    expirationSeconds=expiration_seconds,
                ),
            )
        )
        return name

    async def set_condition(self, name: str, type_: str) -> None:
        """What `kubectl certificate approve|deny` does: the /approval subresource."""
        csr = await self.kube.get(CertificateSigningRequest, name)
        assert csr.status is not None
        csr.status.conditions = [
            *(csr.status.conditions or []),
            CertificateSigningRequestCondition(
                type=type_, status="True", reason="IntegrationTest", message=f"{type_} by test"
            ),
        ]
        await self.kube.replace(CertificateSigningRequestApproval.from_dict(csr.to_dict()))

    async def get(self, name: str) -> dict[str, Any]:
        return (await self.kube.get(CertificateSigningRequest, name)).to_dict()

    async def wait(self, name: str, what: str, done: Any, env: Env) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def check() -> bool:
            found.clear()
            found.update(await self.get(name))
            return bool(done(found))

        await wait_for(check, what=f"CSR {name} {what}", env=env)
        return found

    async def delete_all(self) -> None:
        for name in self.names:
            with contextlib.suppress(Exception):  # best-effort cleanup of a test object
                await self.kube.delete(CertificateSigningRequest, name)


@pytest_asyncio.fixture
async def csrs(env: Env) -> AsyncIterator[CSRs]:
    made = CSRs(env.kube)
    try:
        yield made
    finally:
        await made.delete_all()


def _certificate(obj: dict[str, Any]) -> bytes:
    return base64.b64decode((obj.get("status") or {}).get("certificate") or "")


def _verify(env: Env, obj: dict[str, Any], ca: CA) -> x509.Certificate:
    # The CA is not in a CSR's status; openssl_verify takes it from the ClusterIssuer's CA.
    status = {"certificate": obj["status"]["certificate"], "ca": base64.b64encode(ca.pem).decode()}
    return env.openssl_verify({"status": status}, ca)


async def _cluster_issuer(env: Env, name: str, ca: CA, **extra: Any) -> str:
    await env.create_issuer(name, env.issuer_spec(ca, **extra), cluster=True)
    return f"clusterissuers.{GROUP}/{name}"


async def test_approved_csr_is_signed_with_its_expiration_and_usages(env: Env, csrs: CSRs) -> None:
    ca = await env.make_ca("RSA", size=2048)
    name = f"kcsr-{uuid.uuid4().hex[:6]}"
    signer = await _cluster_issuer(env, name, ca)
    controller = env.start_controller()
    await env.wait_issuer(name, "True", cluster=True)
    signs_before = env.sign_calls()

    unapproved = await csrs.create("unapproved", signer)
    denied = await csrs.create("denied", signer)
    other_signer = await csrs.create("other", "example.com/not-ours")
    approved = await csrs.create(
        "approved",
        signer,
        usages=["digital signature", "client auth"],
        expiration_seconds=3600,
    )
    await csrs.set_condition(denied, "Denied")
    await csrs.set_condition(other_signer, "Approved")
    await csrs.set_condition(approved, "Approved")

    issued = await csrs.wait(approved, "issued", _certificate, env)
    leaf = _verify(env, issued, ca)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(seconds=3600)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    event = await env.wait_event(approved, "Issued", type_="Normal", namespace="default")
    assert event[2] == f"Certificate issued (serial {leaf.serial_number:x})"

    # Nothing else was touched: one signature in all.
    for untouched in (unapproved, denied, other_signer):
        obj = await csrs.get(untouched)
        assert not _certificate(obj), untouched
        assert condition(obj, "Failed") is None, untouched
    assert env.sign_calls() - signs_before == 1
    assert (
        controller.metric(
            "akv_issuer_certificaterequests_issued_total",
            issuer_kind="ClusterIssuer",
            issuer_namespace="",
            issuer_name=name,
        )
        == 1
    )


async def test_csr_key_usages_fit_the_key_and_a_pss_ca_signs_with_pss(env: Env, csrs: CSRs) -> None:
    """Kubernetes CSRs with the usual usages (digital signature, key
    encipherment, ...): an ECDSA or Ed25519 key gets no keyEncipherment (RFC
    8813, RFC 8410/9295), an RSA key keeps it, a CA gets keyCertSign, cRLSign
    and digitalSignature only; all PSS-signed like the ClusterIssuer's CA."""
    ca = await env.make_ca("RSA", size=3072, pss=True)
    name = f"kcsr-{uuid.uuid4().hex[:6]}"
    signer = await _cluster_issuer(env, name, ca, policy={"allowCA": True})
    env.start_controller()
    await env.wait_issuer(name, "True", cluster=True)

    usages = ["digital signature", "key encipherment"]
    made = {
        await csrs.create(
            key_type, signer, usages=usages, request=csr_pem(key_type, default_usages_in_csr=True)
        ): bits
        for key_type, bits in (
            ("ec", {"digital_signature"}),
            ("ed25519", {"digital_signature"}),
            ("rsa", {"digital_signature", "key_encipherment"}),
        )
    }
    sub_ca = await csrs.create(
        "sub-ca",
        signer,
        usages=[*usages, "cert sign"],
        annotations={"experimental.cert-manager.io/request-is-ca": "true"},
        request=csr_pem("ec", "Sub CA", is_ca=True, default_usages_in_csr=True),
    )
    made[sub_ca] = {"digital_signature", "key_cert_sign", "crl_sign"}
    for csr in made:
        await csrs.set_condition(csr, "Approved")
    for csr, bits in made.items():
        cert = _verify(env, await csrs.wait(csr, "issued", _certificate, env), ca)
        assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS, csr
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert key_usage_bits(usage) == bits, csr


async def test_annotations_set_duration_and_ca_and_policy_refusals_end_failed(
    env: Env, csrs: CSRs
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    strict = f"strict-{uuid.uuid4().hex[:6]}"
    lenient = f"lenient-{uuid.uuid4().hex[:6]}"
    strict_signer = await _cluster_issuer(env, strict, ca)
    lenient_signer = await _cluster_issuer(env, lenient, ca, policy={"allowCA": True})
    env.start_controller()
    await env.wait_issuer(strict, "True", cluster=True)
    await env.wait_issuer(lenient, "True", cluster=True)
    ca_annotations = {
        "experimental.cert-manager.io/request-is-ca": "true",
        "experimental.cert-manager.io/request-duration": "48h",
    }
    sub_ca = await csrs.create(
        "sub-ca", lenient_signer, usages=["cert sign", "crl sign"], annotations=ca_annotations
    )
    refused = await csrs.create(
        "refused", strict_signer, usages=["cert sign"], annotations=ca_annotations
    )
    # The API server only checks that a CSR parses; its key size is ours to refuse.
    weak = await csrs.create("weak", strict_signer, request=csr_pem("rsa1024"))
    for name in (sub_ca, refused, weak):
        await csrs.set_condition(name, "Approved")

    issued = await csrs.wait(sub_ca, "issued", _certificate, env)
    leaf = _verify(env, issued, ca)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=48)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    for name, reason in ((refused, "PolicyViolation"), (weak, "InvalidCSR")):
        failed = await csrs.wait(name, "Failed", lambda o: condition(o, "Failed"), env)
        assert (condition(failed, "Failed") or {}).get("status") == "True"
        assert (condition(failed, "Failed") or {}).get("reason") == reason
        # The Failed write kept the approval (a merge patch replaces the whole list).
        assert (condition(failed, "Approved") or {}).get("status") == "True"
        assert not _certificate(failed)
        await env.wait_event(name, "PermanentError", type_="Warning", namespace="default")


async def test_csr_waits_for_a_missing_cluster_issuer_and_is_signed_once_it_exists(
    env: Env, csrs: CSRs
) -> None:
    ca = await env.make_ca("RSA", size=2048)
    name = f"late-{uuid.uuid4().hex[:6]}"
    env.start_controller()
    waiting = await csrs.create("waiting", f"clusterissuers.{GROUP}/{name}")
    await csrs.set_condition(waiting, "Approved")
    await env.wait_event(waiting, "WaitingForIssuerExist", namespace="default")
    await _cluster_issuer(env, name, ca)
    issued = await csrs.wait(waiting, "issued", _certificate, env)
    _verify(env, issued, ca)


async def test_controller_with_csrs_off_leaves_them_alone(env: Env, csrs: CSRs) -> None:
    ca = await env.make_ca("RSA", size=2048)
    name = f"off-{uuid.uuid4().hex[:6]}"
    signer = await _cluster_issuer(env, name, ca)
    env.start_controller("--no-kubernetes-csrs")
    await env.wait_issuer(name, "True", cluster=True)
    csr = await csrs.create("ignored", signer)
    await csrs.set_condition(csr, "Approved")
    # The CertificateRequest path still works meanwhile, so the controller is busy, not dead.
    await env.create_request("cr", csr_pem("ec"), name, kind="ClusterIssuer")
    await env.approve("cr")
    env.openssl_verify(await env.wait_request("cr", "Issued"), ca)
    assert not _certificate(await csrs.get(csr))
    assert condition(await csrs.get(csr), "Failed") is None


# -- namespaced Issuers: only for requesters who may reference them -----------


async def _grant(kube: AsyncClient, role: Any, binding: Any) -> None:
    await kube.apply(role, field_manager="akv-tests", force=True)
    await kube.apply(binding, field_manager="akv-tests", force=True)


def _reference_rule(names: list[str] | None) -> PolicyRule:
    # What cert-manager asks a requester of its own Issuers' CSRs to hold.
    return PolicyRule(
        apiGroups=["cert-manager.io"],
        resources=["signers"],
        verbs=["reference"],
        resourceNames=names,
    )


async def test_namespaced_issuer_signs_only_for_requesters_who_may_reference_it(
    env: Env, csrs: CSRs, make_identity: Any, identity_client: Any
) -> None:
    """signerName issuers.<group>/<namespace>.<name>: a SubjectAccessReview per
    CSR decides (verb reference on cert-manager.io signers in the Issuer's
    namespace, by name or '*'); the others end Failed/DeniedReference with an
    event, and nothing is signed for them."""
    ca = await env.make_ca("EC", curve="P-256")
    issuer = f"team-ca-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(issuer, env.issuer_spec(ca))
    signer = f"issuers.{GROUP}/{env.namespace}.{issuer}"
    elsewhere = f"{env.namespace}-x"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=elsewhere)))
    requester_role = f"akv-tests-csr-requester-{env.namespace}"
    clients: dict[str, AsyncClient] = {}
    subjects: list[Subject] = []
    for who in ("by-name", "by-star", "elsewhere", "nobody"):
        identity = await make_identity(env.namespace, who)
        clients[who] = identity_client(identity)
        subjects.append(Subject(kind="ServiceAccount", name=who, namespace=env.namespace))
    try:
        # Everyone may create CSRs (a cluster-wide right) ...
        await _grant(
            env.kube,
            ClusterRole(
                metadata=ObjectMeta(name=requester_role),
                rules=[
                    PolicyRule(
                        apiGroups=["certificates.k8s.io"],
                        resources=["certificatesigningrequests"],
                        verbs=["create", "get"],
                    )
                ],
            ),
            ClusterRoleBinding(
                metadata=ObjectMeta(name=requester_role),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=requester_role
                ),
                subjects=subjects,
            ),
        )
        # ... but only some may reference Issuers of this namespace.
        for who, namespace, names in (
            ("by-name", env.namespace, [issuer]),
            ("by-star", env.namespace, ["*"]),
            ("elsewhere", elsewhere, None),
        ):
            role = Role(
                metadata=ObjectMeta(name=f"reference-{who}", namespace=namespace),
                rules=[_reference_rule(names)],
            )
            binding = RoleBinding(
                metadata=ObjectMeta(name=f"reference-{who}", namespace=namespace),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="Role", name=f"reference-{who}"
                ),
                subjects=[Subject(kind="ServiceAccount", name=who, namespace=env.namespace)],
            )
            await _grant(env.kube, role, binding)

        controller = env.start_controller()
        await env.wait_issuer(issuer, "True")
        signs_before = env.sign_calls()
        made = {who: await csrs.create(who, signer, as_client=c) for who, c in clients.items()}
        for name in made.values():
            await csrs.set_condition(name, "Approved")

        for who in ("by-name", "by-star"):
            issued = await csrs.wait(made[who], "issued", _certificate, env)
            assert (issued["spec"]["username"]) == f"system:serviceaccount:{env.namespace}:{who}"
            _verify(env, issued, ca)
        for who in ("elsewhere", "nobody"):
            failed = await csrs.wait(made[who], "Failed", lambda o: condition(o, "Failed"), env)
            refused = condition(failed, "Failed") or {}
            assert (refused.get("status"), refused.get("reason")) == ("True", "DeniedReference")
            requester = f"system:serviceaccount:{env.namespace}:{who}"
            assert refused["message"] == (
                f"the requester {requester!r} may not reference Issuer {env.namespace}/{issuer}: "
                f"it needs verb reference on signers (cert-manager.io) in namespace "
                f"{env.namespace}, resourceName {issuer} or all"
            )
            assert (condition(failed, "Approved") or {}).get("status") == "True"
            assert not _certificate(failed)
            event = await env.wait_event(
                made[who], "DeniedReference", type_="Warning", namespace="default"
            )
            assert event[2] == refused["message"]
        # Two certificates, nothing signed for the refused requesters.
        assert env.sign_calls() - signs_before == 2
        assert (
            controller.metric(
                "akv_issuer_certificaterequests_failed_total",
                issuer_kind="Issuer",
                issuer_name=issuer,
                reason="DeniedReference",
            )
            == 2
        )
    finally:
        for client in clients.values():
            await client.close()
        for kind in (ClusterRoleBinding, ClusterRole):
            with contextlib.suppress(Exception):  # best-effort cleanup of a test object
                await env.kube.delete(kind, requester_role)
        with contextlib.suppress(Exception):
            await env.kube.delete(Namespace, elsewhere)


async def test_a_malformed_signer_name_of_ours_ends_failed_not_ignored(
    env: Env, csrs: CSRs
) -> None:
    env.start_controller()
    nameless = await csrs.create("nameless", f"issuers.{GROUP}/{env.namespace}")
    await csrs.set_condition(nameless, "Approved")
    failed = await csrs.wait(nameless, "Failed", lambda o: condition(o, "Failed"), env)
    refused = condition(failed, "Failed") or {}
    assert (refused.get("status"), refused.get("reason")) == ("True", "InvalidRequest")
    assert refused["message"] == (
        f"signerName 'issuers.{GROUP}/{env.namespace}' names no Issuer: expected "
        f"issuers.{GROUP}/<namespace>.<name>"
    )
    await env.wait_event(nameless, "PermanentError", type_="Warning", namespace="default")


async def test_without_subjectaccessreviews_a_namespaced_csr_waits_and_says_forbidden(
    env: Env, csrs: CSRs
) -> None:
    """A ClusterRole older than the image (no create on subjectaccessreviews):
    the namespaced Issuer's CSR is neither signed nor failed; a Warning event
    Forbidden names the permission and the chart value."""
    await env.bind_features(without=("subjectaccessreviews",))
    ca = await env.make_ca("EC", curve="P-256")
    issuer = f"team-ca-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(issuer, env.issuer_spec(ca))
    env.start_controller()
    await env.wait_issuer(issuer, "True")
    waiting = await csrs.create("waiting", f"issuers.{GROUP}/{env.namespace}.{issuer}")
    await csrs.set_condition(waiting, "Approved")
    event = await env.wait_event(waiting, "Forbidden", type_="Warning", namespace="default")
    assert event[2] == (
        f"whether the requester may use Issuer {env.namespace}/{issuer} cannot be checked: "
        "the controller may not create subjectaccessreviews (authorization.k8s.io) "
        "cluster-wide (forbidden); grant it with the Helm value controller.kubernetesCSRs=true, "
        "which renders it with the CSR rules (kustomize: config/rbac/role.yaml); retried "
        "every 120s"
    )
    obj = await csrs.get(waiting)
    assert not _certificate(obj)
    assert condition(obj, "Failed") is None
