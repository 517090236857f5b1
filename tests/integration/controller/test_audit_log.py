"""Audit records (issue 14, point 6): one ``akv_issuer.audit`` JSON record per
issued, refused and revoked certificate, read from the controller's own
``--log-format json`` output.

The requests are created by a ServiceAccount of the test namespace, never by
the admin, so the requester in a record is an identity the API server
authenticated. For Kubernetes CSRs the API server itself writes
``spec.username``; for CertificateRequests cert-manager's webhook does, and it
does not run on the local control plane, so a MutatingAdmissionPolicy (a
real API server feature, CEL over the admission request) does the same thing
here: it copies ``request.userInfo`` into ``spec.username/uid/groups`` on
create.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from cryptography import x509
from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource
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
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)
from lightkube.types import PatchType

from akv_devcluster import Identity
from akv_issuer.controller.api import GROUP, CertificateRequest
from akv_issuer.controller.revocation.store import ANNOTATION_REVOKE
from support.controller_harness import CA, Controller, Env, csr_pem, wait_for

MutatingAdmissionPolicy = create_global_resource(
    "admissionregistration.k8s.io", "v1", "MutatingAdmissionPolicy", "mutatingadmissionpolicies"
)
MutatingAdmissionPolicyBinding = create_global_resource(
    "admissionregistration.k8s.io",
    "v1",
    "MutatingAdmissionPolicyBinding",
    "mutatingadmissionpolicybindings",
)
# What cert-manager's webhook does on create (pkg/webhook: the request's user info).
# The groups are copied element by element: Kubernetes 1.37 (cel-go 0.29) can
# no longer turn `request.userInfo.groups` itself into a JSON Patch value
# ("type conversion error from 'list(dyn)' to '*structpb.Value'").
_REQUESTER_VALUES = {
    "username": "request.userInfo.username",
    "uid": "request.userInfo.uid",
    "groups": "request.userInfo.groups.map(g, string(g))",
}
REQUESTER_EXPRESSION = (
    "["
    + ", ".join(
        f'JSONPatch{{op: "add", path: "/spec/{field}", value: {value}}}'
        for field, value in _REQUESTER_VALUES.items()
    )
    + "]"
)


@dataclass
class Requester:
    identity: Identity
    client: AsyncClient


def audit_records(controller: Controller) -> list[dict[str, Any]]:
    """The ``audit`` objects of the controller's JSON log lines."""
    found = []
    for line in controller.log().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "akv_issuer.audit":
            found.append(entry["audit"])
    return found


async def wait_records(
    env: Env, controller: Controller, event: str, name: str, count: int = 1
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = [
            r
            for r in audit_records(controller)
            if r["event"] == event and r["request"]["name"] == name
        ]
        return len(found) >= count

    await wait_for(check, what=f"{event} audit record of {name}", env=env)
    return found


def leaf_of(certificate_b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(base64.b64decode(certificate_b64))[0]


@pytest_asyncio.fixture
async def requester(env: Env, make_identity: Any, identity_client: Any) -> AsyncIterator[Requester]:
    """A ServiceAccount that may create CertificateRequests here and Kubernetes
    CSRs, and the admission policy recording it as their requester."""
    ns = env.namespace
    identity = await make_identity(ns, "requester")
    subject = Subject(kind="ServiceAccount", name="requester", namespace=ns)
    cluster_name = f"audit-requester-{ns}"
    await env.kube.create(
        Role(
            metadata=ObjectMeta(name="requester", namespace=ns),
            rules=[
                PolicyRule(
                    apiGroups=["cert-manager.io"],
                    resources=["certificaterequests"],
                    verbs=["create", "get"],
                )
            ],
        )
    )
    await env.kube.create(
        RoleBinding(
            metadata=ObjectMeta(name="requester", namespace=ns),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="requester"),
            subjects=[subject],
        )
    )
    await env.kube.create(
        ClusterRole(
            metadata=ObjectMeta(name=cluster_name),
            rules=[
                PolicyRule(
                    apiGroups=["certificates.k8s.io"],
                    resources=["certificatesigningrequests"],
                    verbs=["create", "get"],
                )
            ],
        )
    )
    await env.kube.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=cluster_name),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_name
            ),
            subjects=[subject],
        )
    )
    await env.kube.create(
        MutatingAdmissionPolicy.from_dict(
            {
                "metadata": {"name": cluster_name},
                "spec": {
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": ["cert-manager.io"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["certificaterequests"],
                            }
                        ]
                    },
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "mutations": [
                        {
                            "patchType": "JSONPatch",
                            "jsonPatch": {"expression": REQUESTER_EXPRESSION},
                        }
                    ],
                },
            }
        )
    )
    await env.kube.create(
        MutatingAdmissionPolicyBinding.from_dict(
            {
                "metadata": {"name": cluster_name},
                "spec": {
                    "policyName": cluster_name,
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                    },
                },
            }
        )
    )
    client = identity_client(identity)

    # Admission policies apply once the API server's informer has them: a
    # dry-run create goes through admission and shows when that is.
    async def policy_active() -> bool:
        probe = CertificateRequest(
            apiVersion="cert-manager.io/v1",
            kind="CertificateRequest",
            metadata=ObjectMeta(name="probe", namespace=ns),
            spec={
                "request": base64.b64encode(csr_pem("ec")).decode(),
                "issuerRef": {"name": "none", "kind": "Issuer", "group": GROUP},
            },
        )
        created = await client.create(probe, dry_run=True)
        return bool((created.spec or {}).get("username"))

    await wait_for(policy_active, what="the requester admission policy")
    try:
        yield Requester(identity, client)
    finally:
        for resource, name in (
            (MutatingAdmissionPolicyBinding, cluster_name),
            (MutatingAdmissionPolicy, cluster_name),
            (ClusterRoleBinding, cluster_name),
            (ClusterRole, cluster_name),
        ):
            with contextlib.suppress(Exception):  # best-effort cleanup
                await env.kube.delete(resource, name)


async def create_request(
    env: Env, who: Requester, name: str, csr: bytes, issuer: str, **spec: Any
) -> None:
    await who.client.create(
        CertificateRequest(
            apiVersion="cert-manager.io/v1",
            kind="CertificateRequest",
            metadata=ObjectMeta(name=name, namespace=env.namespace),
            spec={
                "request": base64.b64encode(csr).decode(),
                "issuerRef": {"name": issuer, "kind": "Issuer", "group": GROUP},
                **spec,
            },
        )
    )


def assert_requester(record: dict[str, Any], who: Requester) -> None:
    assert record["requester"]["username"] == who.identity.username
    assert record["requester"]["uid"], record["requester"]
    assert f"system:serviceaccounts:{who.identity.namespace}" in record["requester"]["groups"]


def assert_certificate(record: dict[str, Any], leaf: x509.Certificate, ca: CA) -> None:
    assert record["serial"] == f"{leaf.serial_number:x}"
    assert record["subject"] == leaf.subject.rfc4514_string()
    assert record["not_before"] == leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["not_after"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["ca"]["key_version"] == ca.key_version
    assert record["ca"]["key_name"] == ca.name
    assert record["ca"]["key_id"].endswith(f"/keys/{ca.name}/{ca.key_version}")


async def test_issued_certificate_request_and_kube_csr_each_leave_one_record(
    env: Env, requester: Requester
) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("audit-ca", env.issuer_spec(ca))
    cluster_issuer = f"audit-{uuid.uuid4().hex[:6]}"
    await env.create_issuer(cluster_issuer, env.issuer_spec(ca), cluster=True)
    controller = env.start_controller("--log-format", "json")
    await env.wait_issuer("audit-ca", "True")
    await env.wait_issuer(cluster_issuer, "True", cluster=True)

    # A CertificateRequest.
    await create_request(env, requester, "cr", csr_pem("ec", "audited.example.com"), "audit-ca")
    await env.approve("cr")
    done = await env.wait_request("cr", "Issued")
    leaf = leaf_of(done["status"]["certificate"])
    (record,) = await wait_records(env, controller, "issued", "cr")
    assert_certificate(record, leaf, ca)
    assert record["sans"] == {"dns": ["audited.example.com"], "ip": [], "email": [], "uri": []}
    assert record["issuer"] == {"kind": "Issuer", "namespace": env.namespace, "name": "audit-ca"}
    assert record["request"] == {
        "kind": "CertificateRequest",
        "namespace": env.namespace,
        "name": "cr",
        "uid": done["metadata"]["uid"],
    }
    assert_requester(record, requester)
    event = await env.wait_event("cr", "Issued")
    assert event[2] == f"Certificate issued (serial {leaf.serial_number:x})"

    # A Kubernetes CSR (cluster-scoped; the API server records its creator).
    csr_name = f"audit-{uuid.uuid4().hex[:8]}"
    await requester.client.create(
        CertificateSigningRequest(
            metadata=ObjectMeta(name=csr_name),
            spec=CertificateSigningRequestSpec(
                request=base64.b64encode(csr_pem("ec", "csr.example.com")).decode(),
                signerName=f"clusterissuers.{GROUP}/{cluster_issuer}",
                usages=["digital signature", "server auth"],
            ),
        )
    )
    try:
        csr = await env.kube.get(CertificateSigningRequest, csr_name)
        assert csr.status is not None
        csr.status.conditions = [
            CertificateSigningRequestCondition(
                type="Approved", status="True", reason="AuditTest", message="approved by test"
            )
        ]
        await env.kube.replace(CertificateSigningRequestApproval.from_dict(csr.to_dict()))

        async def signed() -> bool:
            obj = await env.kube.get(CertificateSigningRequest, csr_name)
            return bool(obj.status and obj.status.certificate)

        await wait_for(signed, what=f"CSR {csr_name} signed", env=env)
        obj = await env.kube.get(CertificateSigningRequest, csr_name)
        assert obj.status is not None
        assert obj.status.certificate is not None
        kube_leaf = leaf_of(obj.status.certificate)
        (kube_record,) = await wait_records(env, controller, "issued", csr_name)
        assert_certificate(kube_record, kube_leaf, ca)
        assert kube_record["sans"]["dns"] == ["csr.example.com"]
        assert kube_record["issuer"] == {
            "kind": "ClusterIssuer",
            "namespace": "",
            "name": cluster_issuer,
        }
        assert kube_record["request"]["kind"] == "CertificateSigningRequest"
        assert kube_record["request"]["namespace"] == ""
        assert kube_record["request"]["uid"] == obj.metadata.uid  # type: ignore[union-attr]
        assert_requester(kube_record, requester)
    finally:
        with contextlib.suppress(Exception):
            await env.kube.delete(CertificateSigningRequest, csr_name)

    # One record per certificate, and every line of the JSON log is JSON.
    issued = [r for r in audit_records(controller) if r["event"] == "issued"]
    assert len(issued) == 2, issued
    for line in controller.log().splitlines():
        json.loads(line)


async def test_refused_requests_leave_a_refusal_record(env: Env, requester: Requester) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("audit-ca", env.issuer_spec(ca))
    controller = env.start_controller("--log-format", "json")
    await env.wait_issuer("audit-ca", "True")

    # isCA without the issuer's policy allowing it: PolicyViolation.
    await create_request(
        env, requester, "wants-ca", csr_pem("ec", "sub-ca.example.com"), "audit-ca", isCA=True
    )
    await env.approve("wants-ca")
    await env.wait_request("wants-ca", "Failed")
    (record,) = await wait_records(env, controller, "refused", "wants-ca")
    assert record["reason"] == "PolicyViolation"
    assert record["requested"] == {
        "subject": "CN=sub-ca.example.com",
        "sans": {"dns": ["sub-ca.example.com"], "ip": [], "email": [], "uri": []},
    }
    assert record["issuer"]["name"] == "audit-ca"
    assert record["ca"]["key_version"] == ca.key_version
    assert "serial" not in record
    assert_requester(record, requester)

    # Denied by an approver.
    await create_request(env, requester, "denied", csr_pem("ec", "no.example.com"), "audit-ca")
    await env.deny("denied")
    await env.wait_request("denied", "Denied")
    (denied,) = await wait_records(env, controller, "refused", "denied")
    assert denied["reason"] == "Denied"
    assert "denied by test policy" in denied["message"]
    assert denied["requested"]["subject"] == "CN=no.example.com"
    assert_requester(denied, requester)
    assert not [r for r in audit_records(controller) if r["event"] == "issued"]


async def test_revocation_leaves_a_revocation_record(env: Env, requester: Requester) -> None:
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer("audit-ca", env.issuer_spec(ca, crl={"enabled": True}))
    controller = env.start_controller("--log-format", "json")
    await env.wait_issuer("audit-ca", "True")
    await create_request(env, requester, "victim", csr_pem("ec", "victim.example.com"), "audit-ca")
    await env.approve("victim")
    leaf = leaf_of((await env.wait_request("victim", "Issued"))["status"]["certificate"])

    await env.kube.patch(
        CertificateRequest,
        "victim",
        {"metadata": {"annotations": {ANNOTATION_REVOKE: "keyCompromise"}}},
        namespace=env.namespace,
        patch_type=PatchType.MERGE,
    )
    (record,) = await wait_records(env, controller, "revoked", "victim")
    assert_certificate(record, leaf, ca)
    assert record["sans"]["dns"] == ["victim.example.com"]
    assert record["revocation"]["reason"] == "keyCompromise"
    assert record["revocation"]["recorded_in"] == (
        f"{env.namespace}/akv-revocations-issuer-audit-ca"
    )
    assert_requester(record, requester)  # who requested the certificate
