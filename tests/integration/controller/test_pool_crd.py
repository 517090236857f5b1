"""spec.pool as the real API server validates it with our CRDs: the sample is accepted
as written, two members of one name and a member without its key are refused with the
field named (422), before the controller ever sees them."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import ApiError, AsyncClient

from support.crd_samples import ClusterIssuer, create_cluster_issuer, fresh_sample


def _sample() -> dict[str, Any]:
    return fresh_sample("clusterissuer-pool.yaml", "pool")


async def test_the_pool_sample_is_accepted_with_its_defaults(
    kube_client: AsyncClient, issuer_crds: list[str]
) -> None:
    manifest = _sample()
    del manifest["spec"]["pool"]["retryAfter"]
    created = await create_cluster_issuer(kube_client, manifest)
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
        await create_cluster_issuer(kube_client, manifest)
    assert caught.value.status.code == 422
    assert "spec.pool" in str(caught.value.status.message)
    assert words in str(caught.value.status.message)
