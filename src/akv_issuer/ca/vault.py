"""The Key Vault calls the CA rules make: one vault, one identity, each call
awaited through ``count`` (counts nothing by default).

``access`` is anything with ``KeyVaultAccess``'s methods (:class:`VaultAccess`):
the CLI passes its ``KeyVaultAccess``; the controller its Key Vault gateway
(``controller.core.KeyVaultGateway``), which counts every call and gives a
signer holding a sign slot and the leader fence, like every sign it makes."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from akv_issuer.keyvault import (
    PEM_CONTENT_TYPE,
    AuthConfig,
    KeyInfo,
    KeyVersion,
    SecretInfo,
    SecretVersion,
)
from akv_issuer.pki import RemoteSigner

T = TypeVar("T")


class VaultAccess(Protocol):
    """What the CA rules call of ``akv_issuer.keyvault.KeyVaultAccess``."""

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo: ...

    async def list_key_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[KeyVersion, ...]: ...

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo: ...

    async def create_key(
        self,
        vault_url: str,
        name: str,
        auth: AuthConfig,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
    ) -> KeyInfo: ...

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo: ...

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]: ...

    async def set_secret(
        self,
        vault_url: str,
        name: str,
        value: str,
        auth: AuthConfig,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> SecretInfo: ...

    def signer(self, key: KeyInfo, auth: AuthConfig) -> RemoteSigner: ...


class Count(Protocol):
    """Awaits one Key Vault call named by its operation (``get_key``, ...)."""

    def __call__(self, operation: str, call: Awaitable[T], /) -> Awaitable[T]: ...


async def uncounted(operation: str, call: Awaitable[T], /) -> T:
    """The :class:`Count` of a caller that counts nothing."""
    return await call


@dataclass(frozen=True)
class CAVault:
    """A vault as one identity sees it, for the CA rules."""

    access: VaultAccess
    vault_url: str
    auth: AuthConfig
    count: Count = uncounted

    async def get_key(self, name: str, version: str | None = None) -> KeyInfo:
        return await self.count(
            "get_key", self.access.get_key(self.vault_url, name, version, self.auth)
        )

    async def list_key_versions(self, name: str) -> tuple[KeyVersion, ...]:
        """Newest first, at most the keyvault layer's default limit."""
        return await self.count(
            "list_key_versions", self.access.list_key_versions(self.vault_url, name, self.auth)
        )

    async def rotate_key(self, name: str) -> KeyInfo:
        return await self.count(
            "rotate_key", self.access.rotate_key(self.vault_url, name, self.auth)
        )

    async def create_key(
        self, name: str, *, kty: str, size: int | None = None, curve: str | None = None
    ) -> KeyInfo:
        return await self.count(
            "create_key",
            self.access.create_key(
                self.vault_url, name, self.auth, kty=kty, size=size, curve=curve
            ),
        )

    async def get_secret(self, name: str, version: str | None = None) -> SecretInfo:
        return await self.count(
            "get_secret", self.access.get_secret(self.vault_url, name, version, self.auth)
        )

    async def list_secret_versions(self, name: str) -> tuple[SecretVersion, ...]:
        """Newest first, at most the keyvault layer's default limit."""
        return await self.count(
            "list_secret_versions",
            self.access.list_secret_versions(self.vault_url, name, self.auth),
        )

    async def set_pem_secret(
        self, name: str, pem: str, *, tags: Mapping[str, str] | None = None
    ) -> SecretInfo:
        """A new version of secret ``name`` holding ``pem`` (content type PEM)."""
        return await self.count(
            "set_secret",
            self.access.set_secret(
                self.vault_url,
                name,
                pem,
                self.auth,
                content_type=PEM_CONTENT_TYPE,
                tags=dict(tags) if tags is not None else None,
            ),
        )

    def signer(self, key: KeyInfo) -> RemoteSigner:
        """The key version's signer from ``access`` (the controller's gateway
        counts it, holds a sign slot and asks the leader fence; ``count`` does
        not see signs)."""
        return self.access.signer(key, self.auth)
