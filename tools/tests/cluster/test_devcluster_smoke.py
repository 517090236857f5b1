"""The local control plane behaves like a real cluster in the ways the issuer relies on."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import PatchType

CertificateRequest = create_namespaced_resource(
    "cert-manager.io", "v1", "CertificateRequest", "certificaterequests"
)
ISSUER_GROUP = "azure-keyvault-issuer.gonicus.de"


def _csr_pem(common_name: str = "smoke.example.com") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _request(name: str, namespace: str, spec: dict[str, Any] | None = None) -> Any:
    return CertificateRequest(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=spec
        if spec is not None
        else {
            "request": base64.b64encode(_csr_pem()).decode(),
            "issuerRef": {"name": "vault-ca", "kind": "Issuer", "group": ISSUER_GROUP},
            "usages": ["digital signature", "key encipherment"],
        },
    )


async def test_cert_manager_crds_are_established(kube_client: AsyncClient) -> None:
    crd = await kube_client.get(CustomResourceDefinition, "certificaterequests.cert-manager.io")
    assert crd.status is not None
    established = {c.type: c.status for c in crd.status.conditions or []}
    assert established.get("Established") == "True"
    assert [v.name for v in crd.spec.versions if v.served] == ["v1"]


async def test_certificate_request_round_trip(kube_client: AsyncClient, namespace: str) -> None:
    created = await kube_client.create(_request("round-trip", namespace))
    fetched = await kube_client.get(CertificateRequest, "round-trip", namespace=namespace)
    assert fetched.metadata is not None
    assert fetched.metadata.uid == created.metadata.uid
    pem = base64.b64decode(fetched["spec"]["request"])
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST")
    assert fetched["spec"]["issuerRef"] == {
        "name": "vault-ca",
        "kind": "Issuer",
        "group": ISSUER_GROUP,
    }


async def test_status_apply_is_seen_by_a_watch(kube_client: AsyncClient, namespace: str) -> None:
    created = await kube_client.create(_request("watched", namespace))
    start_version = created.metadata.resourceVersion
    seen: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def watch() -> None:
        async for event, obj in kube_client.watch(
            CertificateRequest,
            namespace=namespace,
            resource_version=start_version,
            fields={"metadata.name": "watched"},
        ):
            await seen.put((event, obj))

    watcher = asyncio.create_task(watch())
    try:
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": "Pending",
            "message": "smoke test",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }
        await kube_client.patch(
            CertificateRequest.Status,
            "watched",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "CertificateRequest",
                "metadata": {"name": "watched", "namespace": namespace},
                "status": {"conditions": [condition]},
            },
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager="akv-issuer-smoke",
        )
        event, obj = await asyncio.wait_for(seen.get(), timeout=10)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    assert event == "MODIFIED"
    assert obj["status"]["conditions"] == [condition]
    managers = {(m.manager, m.operation, m.subresource) for m in obj.metadata.managedFields}
    assert ("akv-issuer-smoke", "Apply", "status") in managers
    # A status write must not touch the spec.
    assert obj["spec"]["issuerRef"]["name"] == "vault-ca"


async def test_stale_resource_version_is_a_conflict(
    kube_client: AsyncClient, namespace: str
) -> None:
    created = await kube_client.create(_request("stale", namespace))
    first_version = created.metadata.resourceVersion

    def labelled(value: str, resource_version: str) -> Any:
        update = _request("stale", namespace, spec=dict(created["spec"]))
        update["metadata"] = ObjectMeta(
            name="stale",
            namespace=namespace,
            labels={"touched": value},
            resourceVersion=resource_version,
        )
        return update

    updated = await kube_client.replace(labelled("first", first_version))
    assert updated.metadata.resourceVersion != first_version
    assert updated.metadata.labels == {"touched": "first"}

    with pytest.raises(ApiError) as caught:
        await kube_client.replace(labelled("second", first_version))
    assert caught.value.status.code == 409
    assert caught.value.status.reason == "Conflict"
    current = await kube_client.get(CertificateRequest, "stale", namespace=namespace)
    assert current.metadata is not None
    assert current.metadata.labels == {"touched": "first"}


async def test_identity_without_rbac_is_forbidden(
    kube_client: AsyncClient, namespace: str, make_identity: Any, identity_client: Any
) -> None:
    identity = await make_identity(namespace, "no-rights")
    assert identity.username == f"system:serviceaccount:{namespace}:no-rights"
    client = identity_client(identity)

    with pytest.raises(ApiError) as caught:
        await client.get(CertificateRequest, "anything", namespace=namespace)
    assert caught.value.status.code == 403
    assert identity.username in (caught.value.status.message or "")

    # The same token works once RBAC grants the verb: the 403 above was
    # authorization, not a broken token.
    await kube_client.create(
        Role(
            metadata=ObjectMeta(name="read-crs", namespace=namespace),
            rules=[
                PolicyRule(
                    apiGroups=["cert-manager.io"],
                    resources=["certificaterequests"],
                    verbs=["get", "list"],
                )
            ],
        )
    )
    await kube_client.create(
        RoleBinding(
            metadata=ObjectMeta(name="read-crs", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="read-crs"),
            subjects=[Subject(kind="ServiceAccount", name="no-rights", namespace=namespace)],
        )
    )
    await kube_client.create(_request("visible", namespace))
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            got = await client.get(CertificateRequest, "visible", namespace=namespace)
            break
        except ApiError as exc:
            # RBAC changes reach the authorizer's cache shortly after the write.
            if exc.status.code != 403 or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
    assert got.metadata.name == "visible"
    with pytest.raises(ApiError) as still:
        await client.delete(CertificateRequest, "visible", namespace=namespace)
    assert still.value.status.code == 403


async def test_schema_rejects_an_invalid_request(kube_client: AsyncClient, namespace: str) -> None:
    bad = _request(
        "invalid",
        namespace,
        spec={
            "request": base64.b64encode(_csr_pem()).decode(),
            "issuerRef": {"kind": "Issuer"},  # name is required
            "isCA": "yes",  # boolean in the schema
        },
    )
    with pytest.raises(ApiError) as caught:
        await kube_client.create(bad)
    assert caught.value.status.code == 422
    message = caught.value.status.message or ""
    assert "spec.issuerRef.name" in message
    assert "spec.isCA" in message


async def test_watch_from_a_too_old_version_is_gone(
    kube_client: AsyncClient, namespace: str
) -> None:
    await kube_client.create(_request("old-watch", namespace))
    with pytest.raises(ApiError) as caught:
        async for _ in kube_client.watch(
            CertificateRequest, namespace=namespace, resource_version="1"
        ):
            pass
    assert caught.value.status.code == 410
    assert caught.value.status.reason in ("Expired", "Gone")
