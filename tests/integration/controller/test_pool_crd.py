"""spec.pool as the real API server validates it with our CRDs: the sample is accepted
as written, two members of one name and a member without its key are refused with the
field named (422), before the controller ever sees them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource

from support.api_schema import SAMPLES, load_one

ClusterIssuer = create_global_resource(
    "azure-keyvault-issuer.gonicus.de", "v1alpha1", "ClusterIssuer", "clusterissuers"
)


def _sample() -> dict[str, Any]:
    manifest = copy.deepcopy(load_one(SAMPLES / "clusterissuer-pool.yaml"))
    manifest["metadata"]["name"] = f"pool-{uuid.uuid4().hex[:8]}"
    return manifest


async def _create(client: AsyncClient, manifest: dict[str, Any]) -> Any:
    return await client.create(ClusterIssuer.from_dict(manifest))  # type: ignore[attr-defined]


async def test_the_pool_sample_is_accepted_with_its_defaults(
    kube_client: AsyncClient, issuer_crds: list[str]
) -> None:
    manifest = _sample()
    del manifest["spec"]["pool"]["retryAfter"]
    created = await _create(kube_client, manifest)
    pool = created["spec"]["pool"]
    assert pool["retryAfter"] == "30s"  # the schema's default
    assert [m["name"] for m in pool["members"]] == [
        "northeurope",
        "swedencentral",
        "hsm",
        "germanywestcentral",
    ]
    await kube_client.delete(ClusterIssuer, manifest["metadata"]["name"])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda pool: pool["members"].append(dict(pool["members"][0], keyName="other")),
            "Duplicate value",
        ),
        (lambda pool: pool["members"][0].pop("keyName"), "keyName: Required value"),
        (lambda pool: pool.update(onInvalidMember="Ignore"), "onInvalidMember: Unsupported value"),
        (
            lambda pool: pool["members"][1]["caSource"].update(secret={"name": "x"}),
            "set exactly one of keyVaultSecret, keyVaultCertificate, secret",
        ),
    ],
)
async def test_a_wrong_pool_is_refused_by_the_api_server(
    kube_client: AsyncClient, issuer_crds: list[str], change: Any, words: str
) -> None:
    manifest = _sample()
    change(manifest["spec"]["pool"])
    with pytest.raises(ApiError) as caught:
        await _create(kube_client, manifest)
    assert caught.value.status.code == 422
    assert "spec.pool" in str(caught.value.status.message)
    assert words in str(caught.value.status.message)
