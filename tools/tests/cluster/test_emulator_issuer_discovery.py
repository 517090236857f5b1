"""The emulator (as Entra ID) trusts the dev cluster's service-account issuer by discovery.

Real parts only: the API server serves its OIDC discovery document and JWKS to
anonymous callers (and nothing else), the emulator reads them itself over TLS
verified against the cluster's CA, and a ServiceAccount token from the real
TokenRequest API is exchanged for a Key Vault token through the product's
FederatedServiceAccount path (the Azure SDK's ClientAssertionCredential).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid

import pytest
from lightkube import AsyncClient
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount, ServiceAccountToken

from akv_devcluster import DevCluster
from akv_emulator.testing import EmulatorError, EmulatorProcess
from akv_issuer.keyvault import (
    FederatedServiceAccount,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
)

AUDIENCE = "api://AzureADTokenExchange"


def _anonymous_get(cluster: DevCluster, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    try:
        with urllib.request.urlopen(
            cluster.server_url + path, context=context, timeout=10
        ) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _issuer(cluster: DevCluster) -> str:
    status, body = _anonymous_get(cluster, "/.well-known/openid-configuration")
    assert status == 200
    return str(json.loads(body)["issuer"])


async def _service_account_token(client: AsyncClient, namespace: str, name: str) -> str:
    await client.apply(
        ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)),
        field_manager="akv-tests",
    )
    issued = await client.create(
        ServiceAccountToken(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=TokenRequestSpec(audiences=[AUDIENCE], expirationSeconds=600),
        ),
        name=name,
        namespace=namespace,
    )
    assert issued.status is not None
    return str(issued.status.token)


def test_discovery_is_anonymous_and_nothing_else_is(devcluster: DevCluster) -> None:
    status, body = _anonymous_get(devcluster, "/.well-known/openid-configuration")
    assert status == 200
    doc = json.loads(body)
    assert doc["jwks_uri"].startswith("https://")
    status, body = _anonymous_get(devcluster, "/openid/v1/jwks")
    assert status == 200
    assert json.loads(body)["keys"]
    for path in ("/api/v1/namespaces", "/apis", "/version"):
        assert _anonymous_get(devcluster, path)[0] == 401, path


async def _exchange(emulator: EmulatorProcess, client_id: str, token: str) -> None:
    """One Key Vault call as the federated identity, with ``token`` as its assertion."""

    async def provider(_: FederatedServiceAccount) -> str:
        return token

    identity = FederatedServiceAccount(
        namespace="unused",
        name="unused",
        client_id=client_id,
        tenant_id=emulator.env.tenant_id,
        authority_host=emulator.env.authority_host,
    )
    kv = KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emulator.env.ca_file, backoff=0.05),
        assertion_provider=provider,
    )
    try:
        await kv.create_key(
            emulator.env.vault_url, f"t-{uuid.uuid4().hex[:12]}", identity, kty="EC", curve="P-256"
        )
    finally:
        await kv.close()


async def test_a_service_account_token_is_exchanged_after_discovery_trust(
    devcluster: DevCluster, emulator: EmulatorProcess, kube_client: AsyncClient, namespace: str
) -> None:
    issuer = _issuer(devcluster)
    emulator.admin.trust_issuer_by_discovery(
        issuer, discovery_url=devcluster.server_url, ca_pem=devcluster.ca_file.read_text()
    )
    assert issuer in emulator.admin.call("GET", "trusted-issuers")["issuers"]
    token = await _service_account_token(kube_client, namespace, "workload")

    trusted = str(uuid.uuid4())
    emulator.admin.set_identity(
        trusted,
        federated_subject=f"system:serviceaccount:{namespace}:workload",
        federated_issuer=issuer,
    )
    await _exchange(emulator, trusted, token)
    assert emulator.admin.counters()["token"] == 1

    # The same token for an identity whose federated credential names another subject.
    other = str(uuid.uuid4())
    emulator.admin.set_identity(
        other,
        federated_subject=f"system:serviceaccount:{namespace}:someone-else",
        federated_issuer=issuer,
    )
    with pytest.raises(KeyVaultError) as err:
        await _exchange(emulator, other, token)
    assert "AADSTS70021" in str(err.value)
    assert f"Assertion Subject: 'system:serviceaccount:{namespace}:workload'" in str(err.value)


def test_discovery_trust_fails_clearly(devcluster: DevCluster, emulator: EmulatorProcess) -> None:
    issuer = _issuer(devcluster)
    # No CA bundle: the cluster's self-signed CA is not trusted, TLS verification stays on.
    with pytest.raises(EmulatorError, match=r"HTTP 400.*certificate verify failed"):
        emulator.admin.trust_issuer_by_discovery(issuer, discovery_url=devcluster.server_url)
    # A document that names another issuer is refused (OIDC Discovery 4.3).
    with pytest.raises(EmulatorError, match=r"names issuer .* not 'https://elsewhere\.example'"):
        emulator.admin.trust_issuer_by_discovery(
            "https://elsewhere.example",
            discovery_url=devcluster.server_url,
            ca_pem=devcluster.ca_file.read_text(),
        )
    assert issuer not in emulator.admin.call("GET", "trusted-issuers")["issuers"]
