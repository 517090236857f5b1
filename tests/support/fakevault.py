"""A Key Vault in memory behind the controller's ``core.KeyVault`` interface
(what the controller uses of ``akv_issuer.keyvault.KeyVaultAccess``), for unit
tests of the Key Vault gateway and of what reads through it.

It is a fake of our own interface, not of the Azure SDK (tests/keyvault run the
real SDK against the emulator). It signs for real with a local EC P-256 key,
so the pki layer verifies every signature as in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from akv_issuer.keyvault import (
    AuthConfig,
    CertificateInfo,
    ErrorKind,
    KeyInfo,
    KeyVaultError,
    KeyVersion,
    SecretInfo,
    SecretVersion,
)
from akv_issuer.pki import RemoteSigner, SignatureAlgorithm

VAULT = "https://ca.vault.azure.net"
CREATED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeVault:
    """One EC P-256 key version (``key``, name ``ca-key``, version ``v1``) and the
    secrets stored, in memory. ``hold``, when set, keeps every sign waiting until
    it is set; ``sign_error`` fails signs; ``signs`` counts the signs that reached
    the vault, ``entered`` is set by the first."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.key = KeyInfo(
            vault_url=VAULT,
            name="ca-key",
            version="v1",
            kid=f"{VAULT}/keys/ca-key/v1",
            kty="EC",
            public_key=self.private.public_key(),
            enabled=True,
            key_ops=("sign", "verify"),
        )
        self.signs = 0  # signs that reached the vault
        self.entered = asyncio.Event()  # set by the first sign that reaches it
        self.hold: asyncio.Event | None = None
        self.sign_error: KeyVaultError | None = None
        self.secrets: dict[str, list[str]] = {}

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        return self.key

    async def list_key_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[KeyVersion, ...]:
        return (KeyVersion(self.key.version, True, CREATED),)

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo:
        raise KeyVaultError(ErrorKind.PERMANENT, "this fake vault holds one key version")

    async def create_key(
        self,
        vault_url: str,
        name: str,
        auth: AuthConfig,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
    ) -> KeyInfo:
        raise KeyVaultError(ErrorKind.PERMANENT, "this fake vault holds one key version")

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]:
        versions = self.secrets.get(name, [])
        return tuple(SecretVersion(f"s{n}", True, CREATED) for n in range(len(versions), 0, -1))[
            :limit
        ]

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo:
        if name not in self.secrets:
            raise KeyVaultError(
                ErrorKind.NOT_FOUND, f"A secret with (name/id) {name} was not found", status=404
            )
        return self._secret(name)

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo:
        raise KeyVaultError(ErrorKind.NOT_FOUND, "no certificate", status=404)

    async def set_secret(
        self,
        vault_url: str,
        name: str,
        value: str,
        auth: AuthConfig,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> SecretInfo:
        self.secrets.setdefault(name, []).append(value)
        return self._secret(name)

    def _secret(self, name: str) -> SecretInfo:
        versions = self.secrets[name]
        return SecretInfo(
            VAULT, name, f"s{len(versions)}", f"{VAULT}/secrets/{name}", versions[-1], None
        )

    def signer(self, key: KeyInfo, auth: AuthConfig) -> RemoteSigner:
        return _FakeSigner(self)

    async def close(self) -> None:
        pass


class _FakeSigner:
    def __init__(self, vault: FakeVault) -> None:
        self._vault = vault

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        vault = self._vault
        vault.signs += 1
        vault.entered.set()
        if vault.hold is not None:
            await vault.hold.wait()
        if vault.sign_error is not None:
            raise vault.sign_error
        der = vault.private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
