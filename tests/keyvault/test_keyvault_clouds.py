"""Sovereign clouds, Managed HSM and Key Vault certificate objects through the
real Azure SDK over HTTPS, against the emulator under cloud host names.

The emulator carries the names in its TLS certificate and tunnels them through
its own CONNECT proxy (HTTPS_PROXY), so the SDK talks to
``myvault.vault.azure.cn`` and ``login.chinacloudapi.cn`` as on Azure: TLS and
the challenge-resource check stay on, and /etc/hosts is not touched.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_emulator.testing import EmulatorProcess
from akv_issuer.keyvault import (
    ClientSecret,
    ErrorKind,
    KeyVaultAccess,
    KeyVaultError,
    KeyVaultOptions,
    authority_for,
    cloud_of,
    is_managed_hsm,
)
from akv_issuer.pki import SignatureAlgorithm
from support.emulator import digest_for, import_certificate, verify_locally

CHINA_VAULT = "https://akvtest.vault.azure.cn"
USGOV_VAULT = "https://akvtest.vault.usgovcloudapi.net"
HSM = "https://akvtest.managedhsm.azure.net"
NAMES = [
    "akvtest.vault.azure.cn",
    "login.chinacloudapi.cn",
    "akvtest.vault.usgovcloudapi.net",
    "login.microsoftonline.us",
    "akvtest.managedhsm.azure.net",
    "login.microsoftonline.com",
]


@pytest.fixture(scope="module")
def cloud_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    args = ["--proxy", *(arg for name in NAMES for arg in ("--tls-name", name))]
    process = EmulatorProcess.start(tmp_path_factory.mktemp("akv-clouds"), extra_args=args)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def clouds(cloud_emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> EmulatorProcess:
    """Cloud host names reach the emulator through its proxy; AZURE_AUTHORITY_HOST
    points elsewhere (the emulator's loopback name), so a token request to a cloud's
    authority proves the authority was derived from the vault host."""
    cloud_emulator.admin.reset()
    env = cloud_emulator.env
    monkeypatch.setenv("HTTPS_PROXY", env.values["AKV_EMULATOR_PROXY_URL"])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", env.authority_host)
    return cloud_emulator


def _access(em: EmulatorProcess) -> tuple[KeyVaultAccess, ClientSecret]:
    env = em.env
    access = KeyVaultAccess(KeyVaultOptions(tls_ca_file=env.ca_file, timeout=20))
    # No authority_host: the vault's cloud decides.
    return access, ClientSecret(env.tenant_id, env.sp_client_id, env.sp_client_secret)


def test_authority_table() -> None:
    env = {"AZURE_AUTHORITY_HOST": "https://login.example.test/"}
    assert authority_for(CHINA_VAULT, None, env) == "https://login.chinacloudapi.cn"
    assert authority_for(USGOV_VAULT + ":443/", None, env) == "https://login.microsoftonline.us"
    assert authority_for(HSM, None, env) == "https://login.microsoftonline.com"
    assert authority_for("https://x.managedhsm.azure.cn", None, {}) == (
        "https://login.chinacloudapi.cn"
    )
    assert authority_for("https://127.0.0.1:8443", None, env) == "https://login.example.test"
    assert authority_for("https://127.0.0.1:8443", None, {}) is None
    assert authority_for(CHINA_VAULT, "https://login.private.test/", env) == (
        "https://login.private.test"
    )
    assert is_managed_hsm(HSM)
    assert not is_managed_hsm(CHINA_VAULT)
    assert cloud_of("https://vault.azure.cn.evil.test") is None


@pytest.mark.parametrize(
    ("vault", "authority", "audience"),
    [
        (CHINA_VAULT, "login.chinacloudapi.cn", "https://vault.azure.cn"),
        (USGOV_VAULT, "login.microsoftonline.us", "https://vault.usgovcloudapi.net"),
    ],
)
async def test_sovereign_vault_uses_its_clouds_authority_and_scope(
    clouds: EmulatorProcess, vault: str, authority: str, audience: str
) -> None:
    access, auth = _access(clouds)
    async with access:
        name = f"k-{uuid.uuid4().hex[:10]}"
        key = await access.create_key(vault, name, auth, kty="EC", curve="P-256")
        assert key.kid.startswith(vault + "/keys/")
        digest = digest_for("ES256")
        signature = await access.sign(key, SignatureAlgorithm.ES256, digest, auth)
        verify_locally(key.public_key, "ES256", digest, signature)
    requests = clouds.admin.counters()
    assert requests.get(f"token@{authority}", 0) >= 1, requests
    assert requests.get(f"token_audience@{audience}", 0) >= 1, requests
    loopback = [k for k in requests if k.startswith("token@127.0.0.1")]
    assert not loopback, f"AZURE_AUTHORITY_HOST was used instead of {authority}: {requests}"


@pytest.mark.parametrize(("kty", "alg"), [("RSA-HSM", "PS256"), ("EC-HSM", "ES384")])
async def test_managed_hsm_keys_sign_and_hold_nothing_else(
    clouds: EmulatorProcess, kty: str, alg: str
) -> None:
    access, auth = _access(clouds)
    async with access:
        name = f"hsm-{uuid.uuid4().hex[:10]}"
        key = await access.create_key(
            HSM, name, auth, kty=kty, curve="P-384" if kty.startswith("EC") else None
        )
        assert key.kty == kty
        got = await access.get_key(HSM, name, None, auth)
        digest = digest_for(alg)
        signature = await access.sign(got, SignatureAlgorithm(alg), digest, auth)
        verify_locally(got.public_key, alg, digest, signature)
        for call in (
            access.get_secret(HSM, name, None, auth),
            access.get_certificate(HSM, name, None, auth),
        ):
            with pytest.raises(KeyVaultError) as caught:
                await call
            assert caught.value.kind is ErrorKind.NOT_FOUND, caught.value
            assert "Managed HSM" in caught.value.message
    requests = clouds.admin.counters()
    assert requests.get("token_audience@https://managedhsm.azure.net", 0) >= 1, requests
    assert requests.get("token@login.microsoftonline.com", 0) >= 1, requests


def _ca_pem(common_name: str) -> tuple[bytes, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert


async def test_certificate_object_is_read_without_its_secret(emulator: EmulatorProcess) -> None:
    env = emulator.env
    name = f"c-{uuid.uuid4().hex[:10]}"
    pem, cert = _ca_pem("Certificate Object CA")
    version = await import_certificate(emulator, env.vault_url, name, pem)
    emulator.admin.reset_counters()
    access, auth = env.service_principal_access()
    async with access:
        got = await access.get_certificate(env.vault_url, name, None, auth)
        pinned = await access.get_certificate(env.vault_url, name, version, auth)
        key = await access.get_key(env.vault_url, name, None, auth)
        with pytest.raises(KeyVaultError) as missing:
            await access.get_certificate(env.vault_url, "no-such-cert", None, auth)
    assert missing.value.kind is ErrorKind.NOT_FOUND
    assert got.cer == pinned.cer == cert.public_bytes(serialization.Encoding.DER)
    assert got.version == version == key.version
    assert b"PRIVATE KEY" not in base64.b64encode(got.cer)
    requests = emulator.admin.counters()
    assert requests.get("get_certificate") == 3
    assert not requests.get("get_secret"), requests
