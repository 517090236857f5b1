"""runtime.kubeapi: the hot path's own requests, and what it relies on of lightkube.

The requests run against :class:`~support.fakekube.FakeKube` (the real
httpx2 client lightkube's ``client_adapter`` builds, only the wire replaced).
The contract tests at the end fail when a lightkube release changes what
``KubeApi`` uses of it (``client_adapter.AsyncClient(config,
ConnectionParams)``, the ``ApiError`` constructors), rather than the
controller failing in a cluster: see pyproject.toml's bound on lightkube.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
from lightkube import ApiError, KubeConfig, SingleConfig
from lightkube.config import client_adapter
from lightkube.config.models import Cluster, User
from lightkube.resources.core_v1 import ConfigMap

from akv_issuer.controller.api import CERTIFICATE_REQUESTS, CertificateRequest
from akv_issuer.runtime.kubeapi import (
    APPLY_PATCH,
    PARTIAL_METADATA,
    ApiResource,
    KubeApi,
    watch_error,
)
from support.fakeclock import FakeClock
from support.fakekube import SERVER, FakeKube, FakeTransport

NS = "apps"
CONFIGMAPS = ApiResource("", "v1", "configmaps", namespaced=True)
LEASES = ApiResource("coordination.k8s.io", "v1", "leases", namespaced=True)
NAMESPACES = ApiResource("", "v1", "namespaces", namespaced=False)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(FakeClock(), namespaces=["default", NS])


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[KubeApi]:
    api = kube.api(field_manager="akv-issuer")
    yield api
    await api.close()


def configmap(name: str, value: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"value": value},
    }


def test_paths_of_core_group_namespaced_and_cluster_resources() -> None:
    assert CONFIGMAPS.path() == "/api/v1/configmaps"
    assert CONFIGMAPS.path(NS) == "/api/v1/namespaces/apps/configmaps"
    assert CONFIGMAPS.path(NS, "a") == "/api/v1/namespaces/apps/configmaps/a"
    assert LEASES.path(NS, "l") == "/apis/coordination.k8s.io/v1/namespaces/apps/leases/l"
    assert (
        CERTIFICATE_REQUESTS.path(NS, "r", "status")
        == "/apis/cert-manager.io/v1/namespaces/apps/certificaterequests/r/status"
    )
    # A cluster-scoped resource has no namespace in its path, whatever is given.
    assert NAMESPACES.path("ignored", "apps") == "/api/v1/namespaces/apps"
    assert CERTIFICATE_REQUESTS.api_version == "cert-manager.io/v1"
    assert CONFIGMAPS.api_version == "v1"
    with pytest.raises(ValueError, match="empty configmaps name"):
        CONFIGMAPS.path(NS, "")


async def test_list_pages_follow_the_continue_token(kube: FakeKube, api: KubeApi) -> None:
    for n in range(3):
        kube.add(configmap(f"cm-{n}"))
    first = await api.list_page(CONFIGMAPS, namespace=NS, limit=2)
    assert len(first.items) == 2
    assert first.continue_token
    second = await api.list_page(
        CONFIGMAPS, namespace=NS, limit=2, continue_token=first.continue_token
    )
    assert second.continue_token == ""
    names = [msgspec.json.decode(raw)["metadata"]["name"] for raw in [*first.items, *second.items]]
    assert names == ["cm-0", "cm-1", "cm-2"]
    assert first.resource_version == second.resource_version
    (call, _) = kube.calls("list", ConfigMap)
    assert call.params["limit"] == "2"


async def test_get_is_a_plain_dict_and_a_missing_object_an_api_error(
    kube: FakeKube, api: KubeApi
) -> None:
    kube.add(configmap("a", "x"))
    got = await api.get(CONFIGMAPS, "a", namespace=NS)
    assert type(got) is dict
    assert got["data"] == {"value": "x"}
    with pytest.raises(ApiError) as err:
        await api.get(CONFIGMAPS, "missing", namespace=NS)
    assert err.value.status.code == 404
    assert err.value.status.reason == "NotFound"


async def test_status_apply_answers_with_metadata_only(kube: FakeKube, api: KubeApi) -> None:
    kube.add(
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "r", "namespace": NS},
            "spec": {"request": "Q1NS", "issuerRef": {"name": "vault"}},
        }
    )
    body = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": "r", "namespace": NS},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]},
    }
    written = await api.patch(
        CERTIFICATE_REQUESTS,
        "r",
        body,
        namespace=NS,
        subresource="status",
        content_type=APPLY_PATCH,
        force=True,
        accept=PARTIAL_METADATA,
    )
    assert written["kind"] == "PartialObjectMetadata"
    assert "status" not in written
    stored = kube.get(CertificateRequest, "r", NS)
    assert stored is not None
    assert written["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert stored["status"]["conditions"][0]["reason"] == "Pending"
    (call,) = kube.calls("apply", CertificateRequest, subresource="status")
    assert call.field_manager == "akv-issuer"
    assert call.params.get("force") == "true"


async def test_a_stale_precondition_is_a_409(kube: FakeKube, api: KubeApi) -> None:
    kube.add(configmap("a"))
    with pytest.raises(ApiError) as err:
        await api.patch(
            CONFIGMAPS,
            "a",
            {"metadata": {"resourceVersion": "1"}, "data": {"value": "2"}},
            namespace=NS,
        )
    assert err.value.status.code == 409


async def test_apply_needs_a_field_manager(kube: FakeKube) -> None:
    api = kube.api()
    try:
        with pytest.raises(ValueError, match="field manager"):
            await api.patch(CONFIGMAPS, "a", {}, namespace=NS, content_type=APPLY_PATCH)
    finally:
        await api.close()


async def test_a_non_status_error_body_is_an_http_error_not_an_api_error(
    kube: FakeKube,
) -> None:
    class PlainTextErrors(FakeTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(502, text="bad gateway", request=request)

    config = KubeConfig.from_one(cluster=Cluster(server=SERVER), user=User()).get()
    assert config is not None
    api = KubeApi(config, transport=PlainTextErrors(kube), trust_env=False)
    try:
        with pytest.raises(httpx2.HTTPStatusError) as err:
            await api.get(CONFIGMAPS, "a", namespace=NS)
        assert not isinstance(err.value, ApiError)
        assert err.value.response.status_code == 502
    finally:
        await api.close()


async def test_watch_lines_and_a_gone_watch(kube: FakeKube, api: KubeApi) -> None:
    version = kube.resource_version
    kube.add(configmap("a"))
    kube.add(configmap("b"))
    events: list[tuple[str, str]] = []
    async with api.watch(
        CONFIGMAPS, namespace=NS, resource_version=version, timeout_seconds=60
    ) as lines:
        async for line in lines:
            event = msgspec.json.decode(line)
            events.append((event["type"], event["object"]["metadata"]["name"]))
            if len(events) == 2:
                break
    assert events == [("ADDED", "a"), ("ADDED", "b")]
    # History before the fake began is compacted: the ERROR event's Status.
    async with api.watch(
        CONFIGMAPS, namespace=NS, resource_version="1", timeout_seconds=60
    ) as lines:
        line = await anext(aiter(lines))
    raw = msgspec.json.decode(line, type=dict[str, msgspec.Raw])
    assert msgspec.json.decode(raw["type"]) == "ERROR"
    error = watch_error(raw["object"])
    assert error.status.code == 410


# -- what KubeApi relies on of lightkube ------------------------------------------


class _Recording(FakeTransport):
    """The fake, remembering each request's headers and URL."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(kube)
        self.seen: list[httpx2.Request] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        return await super().handle_async_request(request)


def test_lightkube_client_adapter_is_what_kube_api_calls() -> None:
    # KubeApi builds its httpx2 client as lightkube's own AsyncClient does.
    params = inspect.signature(client_adapter.AsyncClient).parameters
    assert list(params) == ["config", "conn_parameters"]
    fields = {f for f in client_adapter.ConnectionParams.__dataclass_fields__}
    assert {"timeout", "trust_env", "transport"} <= fields
    verify = inspect.signature(client_adapter.verify_cluster).parameters
    assert list(verify)[:3] == ["cluster", "user", "abs_file"]
    # The ApiError constructors raise_for_status and watch_error use.
    assert {"request", "response", "status"} <= set(inspect.signature(ApiError).parameters)


@pytest.mark.parametrize("user", ["token", "token_file"])
async def test_both_clients_authenticate_alike_under_a_path_prefix(
    kube: FakeKube, tmp_path: Path, user: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    credentials = User(token="inline") if user == "token" else User(token_file=str(token_file))
    server = f"{SERVER}/k8s/clusters/c-1"
    config: SingleConfig | None = KubeConfig.from_one(
        cluster=Cluster(server=server), user=credentials
    ).get()
    assert config is not None
    transport = _Recording(kube)
    api = KubeApi(config, transport=transport, trust_env=False)
    try:
        # The fake serves the path after the prefix; the prefix must be kept.
        with pytest.raises(ApiError):
            await api.get(CONFIGMAPS, "a", namespace=NS)
        with pytest.raises(ApiError):
            await api.client.get(ConfigMap, "a", namespace=NS)
    finally:
        await api.close()
    ours, lightkube_s = transport.seen
    expected = "Bearer inline" if user == "token" else "Bearer from-file"
    assert ours.headers["Authorization"] == lightkube_s.headers["Authorization"] == expected
    assert str(ours.url) == str(lightkube_s.url) == f"{server}/api/v1/namespaces/apps/configmaps/a"
