"""Exportable keys, release policies and Managed HSM key attestation through
akv_issuer.keyvault (the real aio SDK) against the emulator: what ``get_key`` reports
and what ``get_key_attestation`` plus ``check_attestation`` accept and refuse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from azure.keyvault.keys import KeyClient, KeyReleasePolicy

from akv_emulator.testing import EmulatorProcess
from akv_issuer.keyvault import (
    AttestationError,
    ClientSecret,
    ErrorKind,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    check_attestation,
)

POLICY = KeyReleasePolicy(json.dumps({"version": "1.0.0", "anyOf": []}).encode())


@pytest.fixture(scope="module")
def hsm_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess.start(
        tmp_path_factory.mktemp("akv-kv-hsm"), extra_args=["--managed-hsm"]
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def hsm(hsm_process: EmulatorProcess) -> AsyncIterator[EmulatorProcess]:
    hsm_process.admin.reset()
    yield hsm_process
    hsm_process.admin.reset()


def _auth(em: EmulatorProcess) -> ClientSecret:
    env = em.env
    return ClientSecret(env.tenant_id, env.sp_client_id, env.sp_client_secret, env.authority_host)


def _sdk(em: EmulatorProcess) -> KeyClient:
    env = em.env
    return KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file)


async def test_get_key_reports_exportable_and_a_release_policy(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    _sdk(emulator).create_rsa_key(
        unique_name, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    _sdk(emulator).create_rsa_key(f"{unique_name}-plain", hardware_protected=True)
    async with KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator.env.ca_file)) as kv:
        exportable = await kv.get_key(emulator.env.vault_url, unique_name, None, _auth(emulator))
        plain = await kv.get_key(
            emulator.env.vault_url, f"{unique_name}-plain", None, _auth(emulator)
        )
    assert (exportable.exportable, exportable.has_release_policy) == (True, True)
    assert (plain.exportable, plain.has_release_policy) == (False, False)


async def test_a_managed_hsm_keys_attestation_is_checked(
    hsm: EmulatorProcess, unique_name: str
) -> None:
    _sdk(hsm).create_ec_key(unique_name, hardware_protected=True, curve="P-384")
    _sdk(hsm).create_ec_key(f"{unique_name}-other", hardware_protected=True, curve="P-384")
    async with KeyVaultAccess(KeyVaultOptions(tls_ca_file=hsm.env.ca_file)) as kv:
        key = await kv.get_key(hsm.env.vault_url, unique_name, None, _auth(hsm))
        attested = await kv.get_key_attestation(
            hsm.env.vault_url, unique_name, key.version, _auth(hsm)
        )
        summary = check_attestation(attested, kid=key.kid, public_key=key.public_key)
        assert summary.key_id == key.kid
        assert summary.format_version == "1.0.0"
        assert summary.hsm_platform == "2"
        assert summary.certificates == 2
        (root,) = summary.roots
        assert "akv-emulator attestation root" in root.subject
        assert len(summary.private_key_attestation_sha256) == 64
        # Another key's attestation does not pass for this one.
        other = await kv.get_key(hsm.env.vault_url, f"{unique_name}-other", None, _auth(hsm))
        wrong = await kv.get_key_attestation(
            hsm.env.vault_url, other.name, other.version, _auth(hsm)
        )
        with pytest.raises(AttestationError, match="not for"):
            check_attestation(wrong, kid=key.kid, public_key=key.public_key)
        # An unknown version is NOT_FOUND.
        with pytest.raises(KeyVaultError) as caught:
            await kv.get_key_attestation(hsm.env.vault_url, unique_name, "0" * 32, _auth(hsm))
        assert caught.value.kind is ErrorKind.NOT_FOUND
        assert hsm.admin.counters()["get_key_attestation"] == 3


async def test_an_exportable_hsm_key_fails_the_attestation_check(
    hsm: EmulatorProcess, unique_name: str
) -> None:
    _sdk(hsm).create_rsa_key(
        unique_name, hardware_protected=True, exportable=True, release_policy=POLICY
    )
    async with KeyVaultAccess(KeyVaultOptions(tls_ca_file=hsm.env.ca_file)) as kv:
        key = await kv.get_key(hsm.env.vault_url, unique_name, None, _auth(hsm))
        attested = await kv.get_key_attestation(
            hsm.env.vault_url, unique_name, key.version, _auth(hsm)
        )
    with pytest.raises(AttestationError, match="exportable"):
        check_attestation(attested, kid=key.kid, public_key=key.public_key)


async def test_a_vault_refuses_attestation(emulator: EmulatorProcess, unique_name: str) -> None:
    _sdk(emulator).create_ec_key(unique_name, hardware_protected=True)
    async with KeyVaultAccess(KeyVaultOptions(tls_ca_file=emulator.env.ca_file)) as kv:
        key = await kv.get_key(emulator.env.vault_url, unique_name, None, _auth(emulator))
        with pytest.raises(KeyVaultError) as caught:
            await kv.get_key_attestation(
                emulator.env.vault_url, unique_name, key.version, _auth(emulator)
            )
    assert (caught.value.kind, caught.value.status) == (ErrorKind.PERMANENT, 400)
