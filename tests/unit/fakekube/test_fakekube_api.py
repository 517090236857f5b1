"""The fake API server's REST semantics, through the real lightkube client.

tests/integration/cluster/test_fakekube_drift.py runs the most important of
these against a real kube-apiserver as well.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret, ServiceAccountToken
from lightkube.types import PatchType

from akv_issuer.controller.api.names import CertificateRequest, ClusterIssuer
from support.fakeclock import FakeClock
from support.fakekube import PARTIAL_METADATA, FakeKube

NS = "apps"


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(FakeClock())


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = kube.client(field_manager="tester")
    yield client
    await client.close()


def request(name: str = "r", **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"request": "Q1NS", "issuerRef": {"name": "vault"}},
    }
    if status:
        obj["status"] = status
    return obj


def condition(type_: str, status: str = "True", **more: str) -> dict[str, str]:
    return {"type": type_, "status": status, **more}


def apply_status(name: str, *conditions: dict[str, str], **meta: str) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": NS, **meta},
        "status": {"conditions": list(conditions)},
    }


async def error_of(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


# -- create, get, delete ----------------------------------------------------------------


async def test_create_sets_the_server_fields_and_a_second_create_is_409(
    kube: FakeKube, client: AsyncClient
) -> None:
    made = await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS), data={}))
    meta = made.metadata
    assert meta.uid
    assert meta.resourceVersion == kube.resource_version
    assert meta.creationTimestamp == kube.clock.now()
    assert meta.generation is None  # ConfigMaps count no generations
    assert [(m.manager, m.operation) for m in meta.managedFields] == [("tester", "Update")]

    err = await error_of(client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS))))
    assert (err.status.code, err.status.reason) == (409, "AlreadyExists")
    assert err.status.message == 'configmaps "a" already exists'


async def test_get_of_a_missing_object_is_404_with_its_group(client: AsyncClient) -> None:
    err = await error_of(client.get(CertificateRequest, "nope", namespace=NS))
    assert (err.status.code, err.status.reason) == (404, "NotFound")
    assert err.status.message == 'certificaterequests.cert-manager.io "nope" not found'
    assert err.status.details.kind == "certificaterequests"
    assert err.status.details.group == "cert-manager.io"


async def test_invalid_names_and_server_fields_are_refused(client: AsyncClient) -> None:
    err = await error_of(
        client.create(ConfigMap(metadata=ObjectMeta(name="Bad_Name", namespace=NS)))
    )
    assert (err.status.code, err.status.reason) == (422, "Invalid")
    assert "metadata.name" in err.status.message
    versioned = ConfigMap(metadata=ObjectMeta(name="v", namespace=NS, resourceVersion="7"))
    err = await error_of(client.create(versioned))
    # The real server answers this one with an internal error without reason.
    assert (err.status.code, err.status.reason) == (500, None)


async def test_an_unknown_resource_is_the_servers_404(kube: FakeKube, client: AsyncClient) -> None:
    from lightkube.generic_resource import create_namespaced_resource

    unknown = create_namespaced_resource("example.com", "v1", "Widget", "widgets")
    err = await error_of(client.get(unknown, "w", namespace=NS))
    assert err.status.code == 404
    assert err.status.message == "the server could not find the requested resource"


async def test_secrets_store_string_data_as_base64(kube: FakeKube, client: AsyncClient) -> None:
    await client.create(
        Secret(metadata=ObjectMeta(name="s", namespace=NS), stringData={"token": "t0p"})
    )
    stored = kube.get(Secret, "s", NS)
    assert stored is not None
    assert stored["data"] == {"token": base64.b64encode(b"t0p").decode()}
    assert stored["type"] == "Opaque"
    assert "stringData" not in stored


async def test_delete_answers_status_for_builtins_and_the_object_for_custom_resources(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": NS}})
    kube.add(request("r"))
    await client.delete(ConfigMap, "a", namespace=NS)
    await client.delete(CertificateRequest, "r", namespace=NS)
    assert [c.status for c in kube.calls("delete")] == [200, 200]
    assert kube.get(ConfigMap, "a", NS) is None
    assert kube.get(CertificateRequest, "r", NS) is None
    err = await error_of(client.delete(ConfigMap, "a", namespace=NS))
    assert err.status.code == 404


async def test_finalizers_keep_a_deleted_object_until_they_are_removed(
    kube: FakeKube, client: AsyncClient
) -> None:
    obj = request("r")
    obj["metadata"]["finalizers"] = ["example.com/keep"]
    kube.add(obj)
    await client.delete(CertificateRequest, "r", namespace=NS)
    terminating = kube.get(CertificateRequest, "r", NS)
    assert terminating is not None
    assert terminating["metadata"]["deletionTimestamp"]
    await client.patch(
        CertificateRequest,
        "r",
        {"metadata": {"finalizers": None}},
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    assert kube.get(CertificateRequest, "r", NS) is None


async def test_strict_namespaces_refuse_objects_in_a_missing_namespace() -> None:
    kube = FakeKube(strict_namespaces=True)
    client = kube.client()
    try:
        err = await error_of(client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS))))
        assert err.status.message == 'namespaces "apps" not found'
        await client.create(Namespace(metadata=ObjectMeta(name=NS)))
        await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS)))
        await client.delete(Namespace, NS)  # takes what is in it along
        assert kube.objects(ConfigMap) == []
    finally:
        await client.close()


# -- update and the simple patches ---------------------------------------------------------


async def test_update_with_a_stale_resource_version_is_a_conflict(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(request("r"))
    first = await client.get(CertificateRequest, "r", namespace=NS)
    first["spec"]["request"] = "Rmlyc3Q="
    await client.replace(first)
    first["spec"]["request"] = "U2Vjb25k"
    err = await error_of(client.replace(first))
    assert (err.status.code, err.status.reason) == (409, "Conflict")
    assert err.status.message == (
        'Operation cannot be fulfilled on certificaterequests.cert-manager.io "r": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert stored["spec"]["request"] == "Rmlyc3Q="
    assert stored["metadata"]["generation"] == 2


async def test_a_custom_resource_update_needs_a_resource_version(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(request("r"))
    err = await error_of(client.replace(CertificateRequest(request("r"))))
    assert (err.status.code, err.status.reason) == (422, "Invalid")


async def test_the_status_goes_only_through_its_subresource(
    kube: FakeKube, client: AsyncClient
) -> None:
    made = await client.create(CertificateRequest(request("r", conditions=[condition("Ready")])))
    assert "status" not in made or not made["status"]  # dropped on create
    found = await client.get(CertificateRequest, "r", namespace=NS)
    found["status"] = {"conditions": [condition("Ready")]}
    found["spec"]["request"] = "Q2hhbmdlZA=="
    await client.replace(found)  # main resource: the status is ignored
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert "status" not in stored
    assert stored["metadata"]["generation"] == 2

    await client.patch(
        CertificateRequest.Status,
        "r",
        {"status": {"conditions": [condition("Ready")]}, "spec": {"request": "SWdub3JlZA=="}},
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert stored["status"] == {"conditions": [condition("Ready")]}
    assert stored["spec"]["request"] == "Q2hhbmdlZA=="  # the spec part was ignored
    assert stored["metadata"]["generation"] == 2  # a status write is no new generation


async def test_a_merge_patch_with_a_resource_version_is_a_precondition(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": NS}})
    old = kube.resource_version
    kube.modify(ConfigMap, "a", NS, lambda o: o.update(data={"k": "1"}))
    body = {"metadata": {"resourceVersion": old}, "data": {"k": "2"}}
    err = await error_of(
        client.patch(ConfigMap, "a", body, namespace=NS, patch_type=PatchType.MERGE)
    )
    assert err.status.code == 409
    body["metadata"]["resourceVersion"] = kube.resource_version
    await client.patch(ConfigMap, "a", body, namespace=NS, patch_type=PatchType.MERGE)
    assert kube.get(ConfigMap, "a", NS)["data"] == {"k": "2"}  # type: ignore[index]


async def test_strategic_merge_is_415_on_custom_resources_and_merges_keyed_lists_elsewhere(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(request("r"))
    err = await error_of(client.patch(CertificateRequest, "r", {"spec": {}}, namespace=NS))
    assert (err.status.code, err.status.reason) == (415, "UnsupportedMediaType")

    kube.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "a",
                "namespace": NS,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "X", "name": "one", "uid": "1"},
                ],
            },
        }
    )
    two = {"apiVersion": "v1", "kind": "X", "name": "two", "uid": "2"}
    await client.patch(ConfigMap, "a", {"metadata": {"ownerReferences": [two]}}, namespace=NS)
    owners = kube.get(ConfigMap, "a", NS)["metadata"]["ownerReferences"]  # type: ignore[index]
    assert [o["name"] for o in owners] == ["one", "two"]


async def test_json_patch(kube: FakeKube, client: AsyncClient) -> None:
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": NS},
            "data": {"x": "1"},
        }
    )
    ops = [{"op": "add", "path": "/data/y", "value": "2"}, {"op": "remove", "path": "/data/x"}]
    await client.patch(ConfigMap, "a", ops, namespace=NS, patch_type=PatchType.JSON)
    assert kube.get(ConfigMap, "a", NS)["data"] == {"y": "2"}  # type: ignore[index]
    failing = [{"op": "test", "path": "/data/y", "value": "3"}]
    err = await error_of(
        client.patch(ConfigMap, "a", failing, namespace=NS, patch_type=PatchType.JSON)
    )
    assert err.status.code == 422


# -- server-side apply ---------------------------------------------------------------------


async def test_apply_creates_then_conflicts_with_another_managers_field_unless_forced(
    kube: FakeKube, client: AsyncClient
) -> None:
    def config(value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": NS},
            "data": {"key": value},
        }

    async def apply(value: str, manager: str, force: bool = False) -> Any:
        return await client.patch(
            ConfigMap,
            "a",
            config(value),
            namespace=NS,
            patch_type=PatchType.APPLY,
            field_manager=manager,
            force=force,
        )

    await apply("1", "first")
    assert kube.calls("apply")[0].status == 201
    err = await error_of(apply("2", "second"))
    assert (err.status.code, err.status.reason) == (409, "Conflict")
    assert err.status.message == ('Apply failed with 1 conflict: conflict with "first": .data.key')
    (cause,) = err.status.details.causes
    assert (cause.reason, cause.field) == ("FieldManagerConflict", ".data.key")
    await apply("1", "second")  # the same value: shared, no conflict
    await apply("2", "second", force=True)
    assert kube.managers(ConfigMap, "a", NS) == {"second/Apply": {".data.key"}}


async def test_conditions_are_a_keyed_list_each_manager_owning_its_own(
    kube: FakeKube, client: AsyncClient
) -> None:
    """cert-manager's Approved (an update), our Ready and the CRL publisher's
    condition live side by side; a manager that stops applying a condition
    removes only its own."""
    kube.add(request("r", conditions=[condition("Approved")]), manager="cert-manager")

    async def apply(manager: str, *conditions: dict[str, str]) -> None:
        await client.patch(
            CertificateRequest.Status,
            "r",
            apply_status("r", *conditions),
            namespace=NS,
            patch_type=PatchType.APPLY,
            field_manager=manager,
            force=True,
        )

    await apply("akv", condition("Ready", "False", reason="Pending"))
    await apply("akv-crl", condition("CRLCurrent"))
    await apply("akv", condition("Ready", "True", reason="Issued"))
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert [(c["type"], c["status"]) for c in stored["status"]["conditions"]] == [
        ("Approved", "True"),
        ("Ready", "True"),
        ("CRLCurrent", "True"),
    ]
    await apply("akv")  # akv applies no condition any more
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert [c["type"] for c in stored["status"]["conditions"]] == ["Approved", "CRLCurrent"]
    entry = next(m for m in stored["metadata"]["managedFields"] if m["manager"] == "akv-crl")
    assert (entry["operation"], entry["subresource"]) == ("Apply", "status")
    assert entry["fieldsV1"] == {
        "f:status": {
            "f:conditions": {'k:{"type":"CRLCurrent"}': {".": {}, "f:status": {}, "f:type": {}}}
        }
    }


async def test_apply_with_a_resource_version_is_a_precondition_and_a_no_op_writes_nothing(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(request("r"))
    version = kube.resource_version
    body = apply_status("r", condition("Ready"), resourceVersion=version)
    await client.patch(
        CertificateRequest.Status,
        "r",
        body,
        namespace=NS,
        patch_type=PatchType.APPLY,
        field_manager="akv",
        force=True,
    )
    written = kube.resource_version
    assert written != version
    err = await error_of(
        client.patch(
            CertificateRequest.Status,
            "r",
            body,  # still the old version
            namespace=NS,
            patch_type=PatchType.APPLY,
            field_manager="akv",
            force=True,
        )
    )
    assert err.status.code == 409
    body["metadata"].pop("resourceVersion")
    await client.patch(
        CertificateRequest.Status,
        "r",
        body,
        namespace=NS,
        patch_type=PatchType.APPLY,
        field_manager="akv",
        force=True,
    )
    assert kube.resource_version == written  # nothing changed: no new version


async def test_status_apply_on_a_missing_object_is_404(client: AsyncClient) -> None:
    err = await error_of(
        client.patch(
            CertificateRequest.Status,
            "gone",
            apply_status("gone", condition("Ready")),
            namespace=NS,
            patch_type=PatchType.APPLY,
            field_manager="akv",
            force=True,
        )
    )
    assert err.status.code == 404


async def test_partial_object_metadata_answers_only_metadata(
    kube: FakeKube, client: AsyncClient
) -> None:
    """The controller's status write asks for PartialObjectMetadata through
    lightkube's generic client; the fake serves that request as it is sent."""
    kube.add(request("r"))
    generic: Any = client._client
    written = await generic.request(
        "patch",
        res=CertificateRequest.Status,
        name="r",
        namespace=NS,
        obj=apply_status("r", condition("Ready")),
        headers={
            "Content-Type": PatchType.APPLY.value,
            "Accept": f"application/json;as={PARTIAL_METADATA};g=meta.k8s.io;v=v1",
        },
        params={"force": "true", "fieldManager": "akv"},
    )
    assert dict(written)["kind"] == "PartialObjectMetadata"
    assert "status" not in dict(written)
    assert written.metadata.resourceVersion == kube.resource_version


# -- list ---------------------------------------------------------------------------------


async def test_list_selectors_and_pages(kube: FakeKube, client: AsyncClient) -> None:
    for n in range(5):
        kube.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c{n}", "namespace": NS, "labels": {"even": str(n % 2 == 0)}},
            }
        )
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o", "namespace": "x"}})

    names = [c.metadata.name async for c in client.list(ConfigMap, namespace=NS, chunk_size=2)]
    assert names == ["c0", "c1", "c2", "c3", "c4"]
    assert len(kube.calls("list")) == 3
    even = [
        c.metadata.name
        async for c in client.list(ConfigMap, namespace="*", labels={"even": "True"})
    ]
    assert even == ["c0", "c2", "c4"]
    named = [
        c.metadata.namespace
        async for c in client.list(ConfigMap, namespace="*", fields={"metadata.name": "o"})
    ]
    assert named == ["x"]
    with pytest.raises(ApiError) as caught:
        [c async for c in client.list(ConfigMap, namespace=NS, fields={"data.x": "1"})]
    assert caught.value.status.code == 400


async def test_an_expired_continue_token_is_410(kube: FakeKube, client: AsyncClient) -> None:
    for n in range(3):
        kube.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c{n}", "namespace": NS},
            }
        )
    pages = client.list(ConfigMap, namespace=NS, chunk_size=1)
    iterator = pages.__aiter__()
    await iterator.__anext__()
    kube.add(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": NS}}
    )
    kube.compact()
    with pytest.raises(ApiError) as caught:
        await iterator.__anext__()
    assert (caught.value.status.code, caught.value.status.reason) == (410, "Expired")


# -- TokenRequests ----------------------------------------------------------------------------


async def test_token_requests(kube: FakeKube, client: AsyncClient) -> None:
    kube.add(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": NS}}
    )
    ask = ServiceAccountToken(
        metadata=ObjectMeta(name="sa", namespace=NS),
        spec={"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600},
    )
    issued = await client.create(ask, name="sa", namespace=NS)
    assert issued.status.token.count(".") == 2
    expected = kube.clock.now().replace(microsecond=0) + dt.timedelta(hours=1)
    assert issued.status.expirationTimestamp == expected
    payload = issued.status.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["sub"] == f"system:serviceaccount:{NS}:sa"
    assert claims["aud"] == ["api://AzureADTokenExchange"]

    err = await error_of(client.create(ask, name="other", namespace=NS))
    assert err.status.message == 'serviceaccounts "other" not found'
    short = ServiceAccountToken(
        metadata=ObjectMeta(name="sa", namespace=NS), spec={"expirationSeconds": 60}
    )
    err = await error_of(client.create(short, name="sa", namespace=NS))
    assert err.status.code == 422


async def test_cluster_scoped_custom_resources(kube: FakeKube, client: AsyncClient) -> None:
    await client.create(ClusterIssuer({"metadata": {"name": "vault"}, "spec": {"keyVault": {}}}))
    stored = kube.get(ClusterIssuer, "vault")
    assert stored is not None
    assert "namespace" not in stored["metadata"]
    assert stored["metadata"]["generation"] == 1
