"""Per-tenant identities (auth.serviceAccountRef) and --issuer-ambient-credentials, end to end.

Real parts only: the controller under its own ServiceAccount and the shipped
manager role, the API server's TokenRequest API, the namespace owner's grant
from config/samples, and the emulator as Entra ID trusting the dev cluster's
service-account issuer (its JWKS read from the API server) for one federated
subject per identity.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import urllib.request
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lightkube import codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from lightkube.types import PatchType

from akv_devcluster import DevCluster
from akv_issuer.controller.api import API_VERSION, CertificateRequest, Issuer
from support.controller_harness import CA, REPO, TEST_MANAGER, Env, condition, csr_pem, wait_for

TENANT_SA = "akv-issuer"
GRANT = REPO / "config" / "samples" / "serviceaccount-token-grant.yaml"


def _b64int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def _cluster_get(cluster: DevCluster, path: str) -> Any:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    request = urllib.request.Request(
        cluster.server_url + path, headers={"Authorization": f"Bearer {cluster.admin_token}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def trust_cluster_issuer(env: Env, cluster: DevCluster) -> str:
    """Make the emulator (Entra ID) trust the API server's service-account issuer
    with the keys of its JWKS, as a federated credential on Azure does; return the issuer."""
    issuer = str(_cluster_get(cluster, "/.well-known/openid-configuration")["issuer"])
    pems = []
    for jwk in _cluster_get(cluster, "/openid/v1/jwks")["keys"]:
        assert jwk["kty"] == "RSA"
        key = rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"])).public_key()
        pems.append(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        )
    env.emulator.admin.trust_issuer(issuer, pems)
    return issuer


def new_identity(env: Env, issuer: str, namespace: str, account: str = TENANT_SA) -> str:
    """An Entra identity whose federated credential trusts exactly namespace/account."""
    client_id = str(uuid.uuid4())
    env.emulator.admin.set_identity(
        client_id,
        federated_subject=f"system:serviceaccount:{namespace}:{account}",
        federated_issuer=issuer,
    )
    return client_id


async def grant_tokens(env: Env, namespace: str, *, account: bool = True) -> None:
    """Apply the namespace owner's sample grant in ``namespace`` (and, with
    ``account``, its ServiceAccount) for the controller under test."""
    with GRANT.open() as handle:
        objects = codecs.load_all_yaml(handle)
    for obj in objects:
        if isinstance(obj, ServiceAccount) and not account:
            continue
        obj.metadata.namespace = namespace
        if getattr(obj, "subjects", None):
            obj.subjects[0].name = "controller"
            obj.subjects[0].namespace = env.namespace
        await env.kube.apply(obj, field_manager=TEST_MANAGER)


def sa_spec(
    env: Env, ca: Any, client_id: str, *, audiences: list[str] | None = None
) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "name": TENANT_SA,
        "clientID": client_id,
        "tenantID": env.emulator.env.tenant_id,
    }
    if audiences is not None:
        ref["audiences"] = audiences
    return env.issuer_spec(ca, auth={"serviceAccountRef": ref})


async def tenant(env: Env, devcluster: DevCluster) -> tuple[str, CA]:
    """The usual tenant: the cluster's service-account issuer trusted, an identity
    federated with the tenant's ServiceAccount in env.namespace, the owner's grant
    applied there, and an EC CA; returns the identity's client id and the CA."""
    issuer = trust_cluster_issuer(env, devcluster)
    client_id = new_identity(env, issuer, env.namespace)
    await grant_tokens(env, env.namespace)
    return client_id, await env.make_ca("EC", curve="P-256")


async def wait_issuer_in(
    env: Env, namespace: str, name: str, status: str, reason: str, contains: str = ""
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        obj = await env.get_issuer(name, namespace=namespace)
        found.update(condition(obj, "Ready") or {})
        return (
            found.get("status") == status
            and found.get("reason") == reason
            and contains in str(found.get("message"))
        )

    await wait_for(check, what=f"issuer {namespace}/{name} Ready={status} {reason}", env=env)
    return found


async def test_tenant_issuer_signs_with_its_own_service_account_and_tokens_stay_cached(
    env: Env, devcluster: DevCluster
) -> None:
    client_id, ca = await tenant(env, devcluster)
    controller = env.start_controller()
    await env.wait_ready(controller)
    env.emulator.admin.reset_counters()
    await env.create_issuer("tenant-ca", sa_spec(env, ca, client_id))
    await env.wait_issuer("tenant-ca", "True", "Checked")
    check_calls = env.emulator.admin.counters()
    check_tokens = controller.metric("akv_issuer_serviceaccount_token_requests_total")
    assert check_tokens == 1
    assert check_calls.get("token") == 1
    check_total = sum(check_calls.values()) + check_tokens

    count = 50
    started = time.monotonic()
    for index in range(count):
        await env.create_request(f"cert-{index}", csr_pem("ec", f"app{index}.example"), "tenant-ca")
        await env.approve(f"cert-{index}")
    await asyncio.gather(*(env.wait_request(f"cert-{i}", "Issued") for i in range(count)))
    elapsed = time.monotonic() - started
    env.openssl_verify(await env.get_request("cert-7"), ca)

    calls = env.emulator.admin.counters()
    tokens = controller.metric("akv_issuer_serviceaccount_token_requests_total")
    signing = {op: calls.get(op, 0) - check_calls.get(op, 0) for op in calls}
    signing = {op: n for op, n in signing.items() if n}
    total = sum(signing.values()) + tokens - check_tokens
    print(
        f"\nserviceAccountRef, {count} certificates in {elapsed:.1f}s: "
        f"issuer check {dict(check_calls)} + TokenRequests {check_tokens:g}; "
        f"signing {signing} + TokenRequests {tokens - check_tokens:g}; "
        f"{total / count:.3f} Key Vault + token calls per certificate after the check, "
        f"{(total + check_total) / count:.3f} with the issuer check"
    )
    assert signing == {"sign": count}
    assert tokens == check_tokens
    assert total / count <= 1.05

    # Default setting: an Issuer with the controller's ambient identity works as before.
    await env.create_issuer("ambient-ca", env.issuer_spec(ca))
    await env.wait_issuer("ambient-ca", "True", "Checked")


async def test_another_namespace_cannot_use_the_tenants_service_account(
    env: Env, devcluster: DevCluster
) -> None:
    client_id, ca = await tenant(env, devcluster)
    other = f"intruder-{uuid.uuid4().hex[:6]}"
    await env.kube.create(Namespace(metadata=ObjectMeta(name=other)))
    try:
        env.start_controller()
        await env.create_issuer("tenant-ca", sa_spec(env, ca, client_id))
        await env.wait_issuer("tenant-ca", "True", "Checked")
        # The same spec in another namespace: the ServiceAccount is looked up
        # there, where nobody allowed the controller to request tokens.
        await env.kube.create(
            Issuer(
                apiVersion=API_VERSION,
                kind="Issuer",
                metadata=ObjectMeta(name="stolen", namespace=other),
                spec=sa_spec(env, ca, client_id),
            )
        )
        ready = await wait_issuer_in(
            env, other, "stolen", "False", "ServiceAccountTokenFailed", contains="forbidden"
        )
        assert f"ServiceAccount {other}/{TENANT_SA}" in ready["message"]
        assert "serviceaccounts/token" in ready["message"]

        # The intruder grants itself tokens of a ServiceAccount it has not
        # created: the API server answers NotFound.
        await grant_tokens(env, other, account=False)
        await env.kube.patch(
            Issuer,
            "stolen",
            {"spec": {"policy": {"allowCA": False}}},
            namespace=other,
            patch_type=PatchType.MERGE,
        )
        await wait_issuer_in(
            env, other, "stolen", "False", "ServiceAccountTokenFailed", contains="not found"
        )

        # Then creates one of the same name: its token names the intruder's
        # namespace, and Entra ID (the emulator) refuses it for the tenant's identity.
        await env.kube.apply(
            ServiceAccount(metadata=ObjectMeta(name=TENANT_SA, namespace=other)),
            field_manager=TEST_MANAGER,
        )
        await env.kube.patch(
            Issuer,
            "stolen",
            {"spec": {"policy": {"allowCA": True}}},
            namespace=other,
            patch_type=PatchType.MERGE,
        )
        ready = await wait_issuer_in(env, other, "stolen", "False", "Forbidden")
        assert "AADSTS70021" in ready["message"]
        assert f"system:serviceaccount:{other}:{TENANT_SA}" in ready["message"]

        # Nothing was signed for the intruder; the tenant still is.
        await env.create_request("member", csr_pem("ec"), "tenant-ca")
        await env.approve("member")
        env.openssl_verify(await env.wait_request("member", "Issued"), ca)
    finally:
        await env.kube.deletecollection(Issuer, namespace=other)
        await env.kube.deletecollection(CertificateRequest, namespace=other)
        await env.kube.delete(Namespace, other)


async def test_a_token_for_the_wrong_audience_is_refused_by_entra(
    env: Env, devcluster: DevCluster
) -> None:
    client_id, ca = await tenant(env, devcluster)
    env.start_controller()
    await env.create_issuer(
        "wrong-audience", sa_spec(env, ca, client_id, audiences=["api://not-entra"])
    )
    obj = await env.wait_issuer("wrong-audience", "False", "Forbidden")
    message = condition(obj, "Ready")["message"]
    assert "AADSTS70021" in message
    assert "api://not-entra" in message
    # The token itself never reaches a status or the log.
    assert "eyJ" not in message
    assert "eyJ" not in "".join(c.log() for c in env.controllers)


async def test_locked_down_controller_refuses_ambient_identities_to_namespaced_issuers(
    env: Env, devcluster: DevCluster
) -> None:
    client_id, ca = await tenant(env, devcluster)
    env.start_controller("--no-issuer-ambient-credentials")
    await env.create_issuer("ambient", env.issuer_spec(ca))
    await env.create_issuer(
        "federated",
        env.issuer_spec(ca, auth={"workloadIdentity": {"clientID": str(uuid.uuid4())}}),
    )
    await env.create_issuer("own-identity", sa_spec(env, ca, client_id))
    cluster_name = f"ambient-{ca.name}"
    await env.create_issuer(cluster_name, env.issuer_spec(ca), cluster=True)

    for name in ("ambient", "federated"):
        obj = await env.wait_issuer(name, "False", "AmbientCredentialsNotAllowed")
        message = condition(obj, "Ready")["message"]
        assert "--issuer-ambient-credentials" in message
        assert f"Issuer {env.namespace}/{name}" in message
    await env.wait_issuer("own-identity", "True", "Checked")
    # ClusterIssuers are created by cluster admins: not affected.
    await env.wait_issuer(cluster_name, "True", "Checked", cluster=True)

    await env.create_request("refused", csr_pem("ec"), "ambient")
    await env.approve("refused")
    await env.wait_request("refused", "Pending", message="IssuerNotReady")
