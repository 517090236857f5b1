"""akv_issuer.ca against the Key Vault emulator: key-version discovery, root
re-certification and the rotation steps, with real keys, secrets and signs
through the real aio SDK (what the vault holds is read back with the SDK)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.x509.oid import NameOID

from akv_emulator.testing import EmulatorProcess
from akv_issuer import ca, pki
from akv_issuer.keyvault import KeyInfo

T = TypeVar("T")

SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "Rotating Root"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
    ]
)


class Counted:
    """A ``count`` that records the operations, as the controller's metric does."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    async def __call__(self, operation: str, call: Awaitable[T], /) -> T:
        self.operations.append(operation)
        return await call


@pytest.fixture
def counted() -> Counted:
    return Counted()


@pytest.fixture
async def vault(emulator: EmulatorProcess, counted: Counted) -> AsyncIterator[ca.CAVault]:
    access, auth = emulator.env.service_principal_access()
    async with access:
        yield ca.CAVault(access, emulator.env.vault_url, auth, counted)


def sdk_clients(emulator: EmulatorProcess) -> tuple[KeyClient, SecretClient]:
    env = emulator.env
    credential = env.sp_credential()
    return (
        KeyClient(env.vault_url, credential, connection_verify=env.ca_file),
        SecretClient(env.vault_url, credential, connection_verify=env.ca_file),
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def first_root(
    vault: ca.CAVault, name: str, *, kty: str = "EC", pss: bool = False
) -> tuple[KeyInfo, ca.StoredRoot]:
    """A key and its root stored in the secret of the same name, as ``ca create
    --create-key --upload-secret`` makes them."""
    key = await vault.create_key(name, kty=kty, size=2048 if kty == "RSA" else None)
    template = ca.RootTemplate(SUBJECT, dt.timedelta(days=30), path_length=1)
    algorithm = ca.signature_algorithm(key.public_key, pss=pss)
    stored = await ca.recertify_root(
        vault, name, key, template, algorithm, vault.signer(key), now()
    )
    return key, stored


async def test_the_key_version_a_ca_holds_is_found_after_a_new_version(
    vault: ca.CAVault, emulator: EmulatorProcess, unique_name: str, counted: Counted
) -> None:
    v1, stored = await first_root(vault, unique_name)
    v2 = await vault.rotate_key(unique_name)
    secret = await vault.get_secret(unique_name)
    counted.operations.clear()

    found = await ca.key_version_of_ca(vault, unique_name, secret.value, v2, now())
    assert found is not None
    key, chain = found
    assert key.version == v1.version
    assert chain.ca == stored.cert
    assert counted.operations == ["list_key_versions", "get_key"]

    # A disabled version is not one to sign with: the issuer check finds none,
    # while `ca rotate` still names the version the certificate holds.
    keys, _ = sdk_clients(emulator)
    keys.update_key_properties(unique_name, v1.version, enabled=False)
    assert await ca.key_version_of_ca(vault, unique_name, secret.value, v2, now()) is None
    current = await ca.current_ca(vault, unique_name, unique_name)
    assert (current.key.version, current.latest.version) == (v1.version, v2.version)
    assert current.pending
    assert current.secret_version == stored.secret_version


async def test_a_listing_failure_names_the_call(
    vault: ca.CAVault, emulator: EmulatorProcess, unique_name: str
) -> None:
    _, stored = await first_root(vault, unique_name)
    v2 = await vault.rotate_key(unique_name)
    # More failures than the keyvault layer retries.
    emulator.admin.set_faults(
        {"errors": {"next": 10, "operations": ["list_key_versions"], "status": 500}}
    )
    with pytest.raises(ca.KeyVersionUnreadable) as err:
        await ca.key_version_of_ca(vault, unique_name, ca_pem(stored), v2, now())
    assert err.value.version is None
    assert err.value.error.status == 500


def ca_pem(stored: ca.StoredRoot) -> str:
    return stored.chain.pem().decode()


async def test_current_ca_refusals(vault: ca.CAVault, unique_name: str) -> None:
    await vault.create_key(unique_name, kty="EC")
    with pytest.raises(ca.CASecretNotFound):
        await ca.current_ca(vault, unique_name, unique_name)

    other = f"{unique_name}-other"
    await first_root(vault, other)
    with pytest.raises(ca.NoKeyVersionForCA) as err:
        await ca.current_ca(vault, unique_name, other)
    assert err.value.searched == 1
    assert f"secret {other} holds no certificate for any of the 1 newest" in str(err.value)


@pytest.mark.parametrize(("kty", "pss"), [("EC", False), ("RSA", True)])
async def test_rotation_steps_then_each_key_version_finds_its_ca(
    vault: ca.CAVault, emulator: EmulatorProcess, unique_name: str, kty: str, pss: bool
) -> None:
    v1, first = await first_root(vault, unique_name, kty=kty, pss=pss)
    current = await ca.current_ca(vault, unique_name, unique_name)
    assert not current.pending
    plan = ca.plan_rotation(current, key_name=unique_name, secret_name=unique_name)
    assert plan.step is ca.RotationStep.NEW_VERSION
    v2 = await ca.new_key_version(vault, plan)
    assert v2.version != v1.version
    second = await ca.certify_new_root(vault, plan, v2, now())

    new = second.cert
    assert new.subject == first.cert.subject
    assert new.public_key() == v2.public_key
    assert new.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert pki.is_pss_signed(new) is pss  # PSS kept without being asked again
    _, secrets = sdk_clients(emulator)
    latest_pem = str(secrets.get_secret(unique_name).value)
    assert x509.load_pem_x509_certificate(latest_pem.encode()) == new

    # ca crl / sign --key-version: each key version's CA in its own secret version.
    old_chain, old_version = await ca.ca_of_key_version(vault, unique_name, v1, now())
    assert (old_chain.ca, old_version) == (first.cert, first.secret_version)
    new_chain, new_version = await ca.ca_of_key_version(vault, unique_name, v2, now())
    assert (new_chain.ca, new_version) == (new, second.secret_version)
    with pytest.raises(pki.CAError) as mismatch:
        await ca.ca_of_key_version(
            vault, unique_name, v2, now(), secret_version=first.secret_version
        )
    assert mismatch.value.kind is pki.CAErrorKind.MISMATCH

    stranger = await vault.create_key(f"{unique_name}-x", kty="EC")
    with pytest.raises(ca.NoSecretVersionForKey) as none:
        await ca.ca_of_key_version(vault, unique_name, stranger, now())
    assert none.value.searched == 2


async def test_a_pending_version_is_certified_without_a_new_one(
    vault: ca.CAVault, emulator: EmulatorProcess, unique_name: str
) -> None:
    v1, _ = await first_root(vault, unique_name)
    # Key Vault's rotation policy makes a version no certificate holds yet.
    pending = emulator.admin.rotate_key(unique_name)
    current = await ca.current_ca(vault, unique_name, unique_name)
    assert (current.key.version, current.latest.version) == (v1.version, pending)
    plan = ca.plan_rotation(current, key_name=unique_name, secret_name=unique_name)
    assert plan.step is ca.RotationStep.CERTIFY_PENDING
    key = await ca.new_key_version(vault, plan)
    assert key.version == pending
    keys, _ = sdk_clients(emulator)
    assert len(list(keys.list_properties_of_key_versions(unique_name))) == 2
    stored = await ca.certify_new_root(vault, plan, key, now())
    assert stored.cert.public_key() == key.public_key
    again = await ca.current_ca(vault, unique_name, unique_name)
    assert not again.pending


async def test_a_new_key_of_the_same_shape(vault: ca.CAVault, unique_name: str) -> None:
    v1, _ = await first_root(vault, unique_name, kty="RSA")
    current = await ca.current_ca(vault, unique_name, unique_name)
    with pytest.raises(ca.KeyExists):
        await ca.refuse_existing_key(vault, unique_name)
    target = f"{unique_name}-next"
    await ca.refuse_existing_key(vault, target)
    plan = ca.plan_rotation(
        current, key_name=unique_name, secret_name=unique_name, new_key_name=target
    )
    key = await ca.new_key_version(vault, plan)
    assert key.name == target
    assert ca.key_shape(key) == ca.key_shape(v1) == "RSA 2048"
    stored = await ca.certify_new_root(vault, plan, key, now())
    found = await ca.current_ca(vault, target, target)
    assert found.cert == stored.cert


async def test_a_renewal_stores_a_tagged_version_and_a_refused_sign_stores_nothing(
    vault: ca.CAVault, emulator: EmulatorProcess, unique_name: str
) -> None:
    key, first = await first_root(vault, unique_name)
    template = ca.RootTemplate.renewing(first.cert)
    algorithm = ca.signature_algorithm(key.public_key, ca_cert=first.cert)
    renewed = await ca.recertify_root(
        vault,
        unique_name,
        key,
        template,
        algorithm,
        vault.signer(key),
        now(),
        tags={"renewed-by": "azure-keyvault-issuer"},
    )
    assert renewed.cert.public_key() == first.cert.public_key()
    assert renewed.cert.serial_number != first.cert.serial_number
    _, secrets = sdk_clients(emulator)
    latest = secrets.get_secret(unique_name)
    assert latest.properties.version == renewed.secret_version
    assert latest.properties.tags == {"renewed-by": "azure-keyvault-issuer"}
    assert latest.properties.content_type == "application/x-pem-file"

    class NotLeading(Exception):
        pass

    class Fenced:
        async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
            raise NotLeading

    signs = len(emulator.admin.sign_log())
    with pytest.raises(NotLeading):
        await ca.recertify_root(vault, unique_name, key, template, algorithm, Fenced(), now())
    assert len(emulator.admin.sign_log()) == signs
    versions = list(secrets.list_properties_of_secret_versions(unique_name))
    assert len(versions) == 2
    stored = str(secrets.get_secret(unique_name).value)
    assert x509.load_pem_x509_certificate(stored.encode()) == renewed.cert
