"""Signer-linked ClusterTrustBundles (issue 25 point 3) against a real
kube-apiserver 1.37 (certificates.k8s.io/v1 ClusterTrustBundle is GA there).

What the in-memory API of the unit tests cannot show: the API server's name
rule for signer-linked bundles, its PEM validation (CA certificates only, no
duplicates), and its ClusterTrustBundleAttest admission, which lets the
controller's ServiceAccount write a bundle only for a signer name the shipped
role grants ``attest`` on. The controller runs as a process under the shipped
manager role plus ``config/rbac/cluster_trust_bundle_publisher_role.yaml``
(Helm ``controller.clusterTrustBundles``), with ``--cluster-trust-bundles``.

All but the last test need kube-apiserver >= 1.37 (the k137 binaries, or
``KUBEBUILDER_ASSETS`` naming a 1.37 kube-apiserver) and fail with that
message on an older one. The last runs on any: on 1.34-1.36 it checks that the
controller with ``--cluster-trust-bundles`` stays up and Ready and says why no
bundle is published; on 1.37 that it publishes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography import x509
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.types import PatchType

from akv_issuer.controller.api import ClusterIssuer, ClusterTrustBundle, Issuer
from support.controller_harness import Env, condition, wait_for

GROUP = "azure-keyvault-issuer.gonicus.de"


def _certs(pem: str | None) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode()) if pem else []


async def _bundle(kube: AsyncClient, name: str) -> dict[str, Any] | None:
    try:
        found: Any = await kube.get(ClusterTrustBundle, name)
    except ApiError as err:
        if err.status.code == 404:
            return None
        raise
    return dict(found.to_dict())


async def _wait_anchors(env: Env, name: str, count: int) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        obj = await _bundle(env.kube, name)
        found.clear()
        found.update(obj or {})
        return len(_certs(((obj or {}).get("spec") or {}).get("trustBundle"))) == count

    await wait_for(check, what=f"ClusterTrustBundle {name} with {count} anchors", env=env)
    return found


async def _wait_gone(env: Env, name: str) -> None:
    async def gone() -> bool:
        return await _bundle(env.kube, name) is None

    await wait_for(gone, what=f"ClusterTrustBundle {name} deleted", env=env)


@pytest.fixture
async def served(kube_client: AsyncClient) -> None:
    """The API server serves ClusterTrustBundles v1 (Kubernetes 1.37+)."""
    try:
        async for _ in kube_client.list(ClusterTrustBundle, chunk_size=1):
            break
    except ApiError as err:
        if err.status.code == 404:
            pytest.fail(
                "this kube-apiserver serves no certificates.k8s.io/v1 ClusterTrustBundles: "
                "these tests need Kubernetes 1.37 (the k137 binaries)",
                pytrace=False,
            )
        raise


def _foreign_bundle(name: str, signer: str, pem: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": name},
        "spec": {"signerName": signer, "trustBundle": pem.decode()},
    }


async def test_the_controller_publishes_rotates_and_removes_a_signer_linked_bundle(
    env: Env, served: None
) -> None:
    suffix = uuid.uuid4().hex[:6]
    issuer = f"ctb-{suffix}"
    name = f"clusterissuers.{GROUP}:{issuer}:trust-anchors"
    await env.bind_features("cluster-trust-bundles")
    old = await env.make_ca("EC", curve="P-256")
    spec = env.issuer_spec(
        old, clusterTrustBundles={"labels": {"trust.example.com/ring": "test"}, "overlap": "20s"}
    )
    await env.create_issuer(issuer, spec, cluster=True)
    env.start_controller("--issuer-recheck-interval", "2s", "--cluster-trust-bundles")
    await env.wait_issuer(issuer, "True", cluster=True)

    published = await _wait_anchors(env, name, 1)
    assert published["spec"]["signerName"] == f"clusterissuers.{GROUP}/{issuer}"
    assert _certs(published["spec"]["trustBundle"]) == [old.cert]
    labels = published["metadata"]["labels"]
    assert labels["trust.example.com/ring"] == "test"
    assert labels["app.kubernetes.io/managed-by"] == "azure-keyvault-issuer"
    owner = await env.get_issuer(issuer, cluster=True)
    (reference,) = published["metadata"]["ownerReferences"]
    assert (reference["kind"], reference["uid"]) == ("ClusterIssuer", owner["metadata"]["uid"])
    # What a Pod's clusterTrustBundle volume selects: signer name and labels.
    selected = [
        item.to_dict()
        async for item in env.kube.list(
            ClusterTrustBundle,
            fields={"spec.signerName": f"clusterissuers.{GROUP}/{issuer}"},
            labels={"trust.example.com/ring": "test"},
        )
    ]
    assert [b["metadata"]["name"] for b in selected] == [name]

    # Rotate: both anchors during the overlap (the API server accepted two CA
    # certificates), then the old one leaves.
    new = await env.rotate_ca(old.name, "EC", curve="P-256")
    both = await _wait_anchors(env, name, 2)
    assert _certs(both["spec"]["trustBundle"]) == [new.cert, old.cert]
    after = await _wait_anchors(env, name, 1)
    assert _certs(after["spec"]["trustBundle"]) == [new.cert]
    await env.wait_event(issuer, "ClusterTrustBundleUpdated", namespace="default")

    # Opting out deletes the bundle.
    await env.kube.patch(
        ClusterIssuer,
        issuer,
        {"spec": {"clusterTrustBundles": None}},
        patch_type=PatchType.MERGE,
    )
    await _wait_gone(env, name)


async def test_a_deleted_issuers_bundle_is_removed_by_the_controller(
    env: Env, served: None
) -> None:
    """A namespaced Issuer cannot own a cluster-scoped bundle: the controller
    deletes it when the Issuer goes."""
    issuer = f"ctb-{uuid.uuid4().hex[:6]}"
    name = f"issuers.{GROUP}:{env.namespace}.{issuer}:trust-anchors"
    await env.bind_features("cluster-trust-bundles")
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer(issuer, env.issuer_spec(ca, clusterTrustBundles={}))
    env.start_controller("--issuer-recheck-interval", "2s", "--cluster-trust-bundles")

    published = await _wait_anchors(env, name, 1)
    assert published["spec"]["signerName"] == f"issuers.{GROUP}/{env.namespace}.{issuer}"
    assert "ownerReferences" not in published["metadata"]

    await env.kube.delete(Issuer, issuer, namespace=env.namespace)
    await _wait_gone(env, name)


async def test_the_shipped_role_lets_the_controller_attest_only_for_our_signer_names(
    env: Env, served: None
) -> None:
    """ClusterTrustBundleAttest: the controller's ServiceAccount, bound as the
    chart binds it, may write a bundle for our signer names and for no other;
    without the role, not even for ours."""
    ca = await env.make_ca("EC", curve="P-256")
    suffix = uuid.uuid4().hex[:6]
    ours = _foreign_bundle(
        f"clusterissuers.{GROUP}:probe-{suffix}:trust-anchors",
        f"clusterissuers.{GROUP}/probe-{suffix}",
        ca.pem,
    )
    other = _foreign_bundle(
        f"example.com:other-{suffix}:roots", f"example.com/other-{suffix}", ca.pem
    )
    controller = AsyncClient(config=KubeConfig.from_file(env.kubeconfig))
    try:
        await env.bind_features()  # the default install: no ClusterTrustBundles
        with pytest.raises(ApiError) as refused:
            await controller.create(ClusterTrustBundle(ours))
        assert refused.value.status.code == 403

        await env.bind_features("cluster-trust-bundles")

        async def attested() -> bool:
            try:
                await controller.create(ClusterTrustBundle(ours))
            except ApiError as err:
                if err.status.code == 403:  # the binding is not in the authorizer's cache yet
                    return False
                raise
            return True

        await wait_for(attested, what="the controller may write a bundle for our signer name")
        with pytest.raises(ApiError) as foreign:
            await controller.create(ClusterTrustBundle(other))
        assert foreign.value.status.code == 403
        assert f'user not permitted to attest for signerName "example.com/other-{suffix}"' in (
            foreign.value.status.message or ""
        )
        # The API server's own rules: a signer-linked name, CA certificates only.
        misnamed = _foreign_bundle(f"probe-{suffix}", f"clusterissuers.{GROUP}/x-{suffix}", ca.pem)
        with pytest.raises(ApiError) as invalid:
            await controller.create(ClusterTrustBundle(misnamed))
        assert invalid.value.status.code == 422
        await controller.delete(ClusterTrustBundle, ours["metadata"]["name"])
    finally:
        await controller.close()


async def _serves_bundles(kube: AsyncClient) -> bool:
    try:
        async for _ in kube.list(ClusterTrustBundle, chunk_size=1):
            break
    except ApiError as err:
        if err.status.code == 404:
            return False
        raise
    return True


async def test_the_controller_stays_ready_whatever_the_api_server_serves(env: Env) -> None:
    """The support matrix goes down to 1.34, which serves no ClusterTrustBundles
    v1: an issuer asking for one stays Ready, and its ClusterTrustBundleBlocked
    condition and a Warning event say why; on 1.37 the same setup publishes."""
    issuer = f"ctb-{uuid.uuid4().hex[:6]}"
    await env.bind_features("cluster-trust-bundles")
    ca = await env.make_ca("EC", curve="P-256")
    await env.create_issuer(issuer, env.issuer_spec(ca, clusterTrustBundles={}), cluster=True)
    controller = env.start_controller("--issuer-recheck-interval", "2s", "--cluster-trust-bundles")
    await env.wait_issuer(issuer, "True", cluster=True)

    if await _serves_bundles(env.kube):
        name = f"clusterissuers.{GROUP}:{issuer}:trust-anchors"
        published = await _wait_anchors(env, name, 1)
        assert _certs(published["spec"]["trustBundle"]) == [ca.cert]
        return

    blocked: dict[str, Any] = {}

    async def reported() -> bool:
        found = condition(await env.get_issuer(issuer, cluster=True), "ClusterTrustBundleBlocked")
        blocked.update(found or {})
        return found is not None

    await wait_for(reported, what="the ClusterTrustBundleBlocked condition", env=env)
    assert (blocked["status"], blocked["reason"]) == ("True", "APINotServed")
    assert "does not serve certificates.k8s.io/v1 ClusterTrustBundles" in blocked["message"]
    await env.wait_event(issuer, "ClusterTrustBundleFailed", namespace="default")
    ready = condition(await env.get_issuer(issuer, cluster=True), "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert controller.alive()
    assert controller.log().count("does not serve certificates.k8s.io/v1") == 1
