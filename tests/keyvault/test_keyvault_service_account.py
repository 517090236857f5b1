"""FederatedServiceAccount: the real azure-identity ClientAssertionCredential and Key
Vault SDK against the emulator as Entra ID, with the token coming from an injected
provider (the controller's is a TokenRequest; here the emulator mints the assertion,
so no Kubernetes is needed at this layer)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from akv_emulator.testing import EmulatorProcess
from akv_issuer.keyvault import (
    SERVICE_ACCOUNT_TOKEN_FAILED,
    AssertionProviderError,
    ErrorKind,
    FederatedServiceAccount,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
)
from akv_issuer.pki import SignatureAlgorithm


@pytest.fixture
def identity(emulator: EmulatorProcess) -> FederatedServiceAccount:
    client_id = str(uuid.uuid4())
    emulator.admin.set_identity(client_id, federated_subject="system:serviceaccount:team:akv")
    return FederatedServiceAccount(
        namespace="team",
        name="akv",
        client_id=client_id,
        tenant_id=emulator.env.tenant_id,
        authority_host=emulator.env.authority_host,
    )


class Provider:
    def __init__(self, emulator: EmulatorProcess) -> None:
        self.emulator = emulator
        self.calls: list[FederatedServiceAccount] = []
        self.fail: AssertionProviderError | None = None
        self.fixed: str | None = None

    async def __call__(self, identity: FederatedServiceAccount) -> str:
        self.calls.append(identity)
        if self.fail is not None:
            raise self.fail
        if self.fixed is not None:
            return self.fixed
        return self.emulator.admin.mint_assertion(identity.client_id)


@pytest.fixture
async def provided(emulator: EmulatorProcess) -> AsyncIterator[tuple[KeyVaultAccess, Provider]]:
    provider = Provider(emulator)
    kv = KeyVaultAccess(
        KeyVaultOptions(tls_ca_file=emulator.env.ca_file, backoff=0.05),
        assertion_provider=provider,
    )
    yield kv, provider
    await kv.close()


async def test_the_provider_token_is_exchanged_once_and_the_entra_token_cached(
    provided: tuple[KeyVaultAccess, Provider],
    identity: FederatedServiceAccount,
    emulator: EmulatorProcess,
    unique_name: str,
) -> None:
    kv, provider = provided
    vault = emulator.env.vault_url
    key = await kv.create_key(vault, unique_name, identity, kty="EC", curve="P-256")
    for _ in range(5):
        await kv.sign(key, _alg(), b"\0" * 32, identity)
    assert emulator.admin.counters()["token"] == 1
    assert {call.client_id for call in provider.calls} == {identity.client_id}


async def test_a_provider_failure_is_a_service_account_token_error(
    provided: tuple[KeyVaultAccess, Provider],
    identity: FederatedServiceAccount,
    emulator: EmulatorProcess,
    unique_name: str,
) -> None:
    kv, provider = provided
    provider.fail = AssertionProviderError("ServiceAccount team/akv not found")
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator.env.vault_url, unique_name, None, identity)
    assert err.value.code == SERVICE_ACCOUNT_TOKEN_FAILED
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert "team/akv not found" in err.value.message
    provider.fail = AssertionProviderError("API server unreachable", retryable=True)
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator.env.vault_url, unique_name, None, identity)
    assert err.value.kind is ErrorKind.TRANSIENT


async def test_a_subject_the_identity_does_not_trust_is_refused_with_entras_error(
    provided: tuple[KeyVaultAccess, Provider],
    emulator: EmulatorProcess,
    identity: FederatedServiceAccount,
    unique_name: str,
) -> None:
    kv, provider = provided
    # A token for system:serviceaccount:team:akv, presented to an identity that
    # now trusts only another namespace's ServiceAccount.
    provider.fixed = emulator.admin.mint_assertion(identity.client_id)
    emulator.admin.set_identity(
        identity.client_id, federated_subject="system:serviceaccount:other:akv"
    )
    with pytest.raises(KeyVaultError) as err:
        await kv.get_key(emulator.env.vault_url, unique_name, None, identity)
    # azure-workload-identity troubleshooting: AADSTS70021 comes as invalid_request.
    assert err.value.code == "invalid_request"
    assert err.value.kind is ErrorKind.FORBIDDEN
    assert "AADSTS70021" in err.value.message


async def test_without_a_provider_the_identity_is_a_configuration_error(
    emulator: EmulatorProcess, identity: FederatedServiceAccount, unique_name: str
) -> None:
    async with KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator.env.ca_file)) as kv:
        with pytest.raises(KeyVaultError) as err:
            await kv.get_key(emulator.env.vault_url, unique_name, None, identity)
    assert err.value.kind is ErrorKind.PERMANENT
    assert err.value.code == "CredentialConfiguration"


def _alg() -> SignatureAlgorithm:

    return SignatureAlgorithm.ES256
