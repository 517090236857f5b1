"""The only code that talks to Key Vault: :class:`KeyVaultAccess`, the facade over
the SDK clients per (vault, identity) (:mod:`.clients`), bounded retries and the
per-vault concurrency limit (:mod:`.retry`), the key cache and shared lookups
(:mod:`.cache`), and error classification (:mod:`.errors`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from akv_issuer.pki import SignatureAlgorithm

from .attestation import KeyAttestation, attestation_from_sdk
from .auth import AssertionProvider, AuthConfig
from .budget import VaultBudgets, cost_of
from .cache import KeyReads
from .clients import ClientPool, VaultClients, proxy_for
from .errors import ErrorKind, KeyVaultError
from .jwk import check_sign_request, key_info, public_key
from .models import (
    PEM_CONTENT_TYPE,
    CertificateInfo,
    KeyInfo,
    KeyVaultOptions,
    KeyVersion,
    PublicKey,
    SecretInfo,
    SecretVersion,
    check_name,
    normalize_vault_url,
)
from .retry import Retrying

__all__ = [
    "PEM_CONTENT_TYPE",
    "CertificateInfo",
    "KeyInfo",
    "KeyVaultAccess",
    "KeyVaultOptions",
    "KeyVaultSigner",
    "KeyVersion",
    "SecretInfo",
    "SecretVersion",
    "normalize_vault_url",
    "proxy_for",
]


class KeyVaultAccess:
    """One per process. All methods raise KeyVaultError, never SDK exceptions.

    Retries and time limits: :mod:`.retry` (the SDK's own retries are off; THROTTLED and
    TRANSIENT failures are retried at most ``max_retries`` times within ``timeout``, and a
    longer Retry-After is raised with ``retry_after`` for the caller's work queue).
    """

    def __init__(
        self,
        options: KeyVaultOptions | None = None,
        *,
        assertion_provider: AssertionProvider | None = None,
        budgets: VaultBudgets | None = None,
    ) -> None:
        self.options = options or KeyVaultOptions.from_env()
        self.options.validate()
        self._pool = ClientPool(self.options, assertion_provider)
        # Told of every 429 (retried or not); the controller's gateway waits on them.
        # Key reads and signs are charged to the vault's budget where they are sent
        # (Retrying), so a key read the cache answers costs nothing (budget.py).
        self._retrying = Retrying(self.options, budgets)
        self._keys = KeyReads(self.options, self._retrying, self._abandoned)
        self._cache = self._keys.cache

    # ---- plumbing ----------------------------------------------------------------------

    def clients(self, vault_url: str, auth: AuthConfig) -> VaultClients:
        """The SDK clients for (vault, identity), made on first use."""
        return self._pool.get(vault_url, auth)

    def _abandoned(self) -> KeyVaultError:
        """What a caller of a shared key lookup gets when the lookup itself was cancelled."""
        if self._pool.closed:
            return KeyVaultError(ErrorKind.PERMANENT, "KeyVaultAccess is closed", code="Closed")
        return KeyVaultError(ErrorKind.TRANSIENT, "the key lookup was cancelled", code="Cancelled")

    # ---- keys --------------------------------------------------------------------------

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        """The key's public part and state; cached (latest briefly, versions longer).

        Concurrent lookups of one key share one request (:class:`.cache.SingleFlight`):
        a caller that is cancelled leaves the others their key. Only that request is
        charged to the vault's budget (:class:`.cache.KeyReads`)."""
        vault = normalize_vault_url(vault_url)
        check_name("key", name)
        clients = self.clients(vault, auth)

        async def fetch() -> KeyInfo:
            key = await clients.keys.get_key(name, version or None)
            return key_info(vault, key)

        return await self._keys.get(auth, vault, name, version, fetch)

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> KeyAttestation:
        """A Managed HSM key version's attestation (GET /keys/{name}/{version}/attestation,
        api-version 2025-07-01; the same permission as get). Not cached: the issuer
        check asks for it once per check of an issuer in an HSM. Check it with
        :func:`.attestation.check_attestation`."""
        vault = normalize_vault_url(vault_url)
        check_name("key", name)
        clients = self.clients(vault, auth)

        async def fetch() -> KeyAttestation:
            key = await clients.keys.get_key_attestation(name, version)
            try:
                public: PublicKey | None = public_key(key.key)
            except KeyVaultError:
                public = None  # a key type that cannot sign: the check says the key differs
            return attestation_from_sdk(key, public)

        return await self._retrying.call("get_key_attestation", vault, fetch)

    async def list_key_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[KeyVersion, ...]:
        """A key's versions, newest first, at most ``limit`` of them.

        Key Vault lists versions in no promised order, so they are sorted by
        creation time here; versions created within the same second (Key
        Vault's resolution) keep the reverse of the listing order. Needs the
        same ``keys/read`` permission as get.
        """
        vault = normalize_vault_url(vault_url)
        check_name("key", name)
        clients = self.clients(vault, auth)
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)

        async def fetch() -> tuple[KeyVersion, ...]:
            found = [
                KeyVersion(str(p.version or ""), bool(p.enabled), p.created_on)
                async for p in clients.keys.list_properties_of_key_versions(name)
                if p.version
            ]
            found.reverse()
            found.sort(key=lambda v: v.created or oldest, reverse=True)
            return tuple(found[:limit])

        # One request per page; charged as one (a CA key has far fewer than a page of 25).
        return await self._retrying.call(
            "list_key_versions", vault, fetch, cost=self._keys.cost(vault, name)
        )

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo:
        """Key Vault's rotate: a new version of the key with the same type, size or curve
        and key operations (and the expiry its rotation policy sets); needs the ``rotate``
        key permission. The key's cached "latest" pointer is dropped for every identity of
        this process, so the next lookup of "latest" asks the vault and finds the new
        version instead of the old one for up to ``latest_ttl``."""
        vault = normalize_vault_url(vault_url)
        check_name("key", name)
        clients = self.clients(vault, auth)

        async def rotate() -> KeyInfo:
            key = await clients.keys.rotate_key(name)
            return key_info(vault, key)

        try:
            info = await self._retrying.call("rotate_key", vault, rotate, idempotent=False)
        finally:
            # Even a failed call may have made a version (a 5xx after the work was done).
            self._cache.forget_latest(vault, name)
        return info

    def invalidate(self, key: KeyInfo) -> None:
        """Forget what is cached about key (any identity), e.g. after it was refused."""
        self._cache.invalidate(key)

    async def sign(
        self, key: KeyInfo, algorithm: SignatureAlgorithm, digest: bytes, auth: AuthConfig
    ) -> bytes:
        """Key Vault's sign: the raw signature (EC: r||s) over digest with key's exact version."""
        check_sign_request(key, algorithm, digest)
        clients = self.clients(key.vault_url, auth)
        crypto = clients.crypto(key)
        # pki's names are the JWS names Key Vault uses, so the SDK's enum takes them as they are.
        from azure.keyvault.keys.crypto import SignatureAlgorithm as AzureSignatureAlgorithm

        azure_alg = AzureSignatureAlgorithm(algorithm.value)

        async def sign() -> bytes:
            result = await crypto.sign(azure_alg, digest)
            return bytes(result.signature)

        try:
            return await self._retrying.call("sign", clients.vault_url, sign, cost=cost_of(key))
        except KeyVaultError as err:
            if not err.retryable:
                self.invalidate(key)
            raise

    def signer(self, key: KeyInfo, auth: AuthConfig) -> KeyVaultSigner:
        return KeyVaultSigner(self, key, auth)

    async def create_key(
        self,
        vault_url: str,
        name: str,
        auth: AuthConfig,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
        key_ops: list[str] | None = None,
    ) -> KeyInfo:
        """Create a key (a new version if the name exists); kty RSA, RSA-HSM, EC or EC-HSM."""
        check_name("key", name)
        if kty not in ("RSA", "RSA-HSM", "EC", "EC-HSM"):
            raise KeyVaultError(
                ErrorKind.PERMANENT,
                f"key type {kty!r} is not one of RSA, RSA-HSM, EC, EC-HSM",
                code="BadParameter",
            )
        clients = self.clients(vault_url, auth)
        options: dict[str, Any] = {}
        if size is not None:
            options["size"] = size
        if curve is not None:
            options["curve"] = curve
        options["key_operations"] = key_ops if key_ops is not None else ["sign", "verify"]

        async def create() -> KeyInfo:
            from azure.keyvault.keys import KeyType

            key = await clients.keys.create_key(name, KeyType(kty), **options)
            return key_info(clients.vault_url, key)

        try:
            info = await self._retrying.call("create_key", clients.vault_url, create)
        finally:
            # A new version of an existing key is its new "latest", as after rotate_key.
            self._cache.forget_latest(clients.vault_url, name)
        return info

    # ---- secrets -----------------------------------------------------------------------

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo:
        check_name("secret", name)
        clients = self.clients(vault_url, auth)

        async def fetch() -> SecretInfo:
            secret = await clients.secrets.get_secret(name, version or None)
            return SecretInfo(
                vault_url=clients.vault_url,
                name=secret.name or name,
                version=str(secret.properties.version or ""),
                id=str(secret.id),
                value=secret.value or "",
                content_type=secret.properties.content_type,
                enabled=bool(secret.properties.enabled),
            )

        return await self._retrying.call("get_secret", clients.vault_url, fetch)

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]:
        """A secret's versions, newest first, at most ``limit`` of them, sorted
        as :meth:`list_key_versions` sorts key versions. Needs secrets
        ``list`` (``secrets/readMetadata/action``), which reading a value does
        not include."""
        check_name("secret", name)
        clients = self.clients(vault_url, auth)
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)

        async def fetch() -> tuple[SecretVersion, ...]:
            found = [
                SecretVersion(str(p.version or ""), bool(p.enabled), p.created_on)
                async for p in clients.secrets.list_properties_of_secret_versions(name)
                if p.version
            ]
            found.reverse()
            found.sort(key=lambda v: v.created or oldest, reverse=True)
            return tuple(found[:limit])

        return await self._retrying.call("list_secret_versions", clients.vault_url, fetch)

    # ---- certificates ------------------------------------------------------------------

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo:
        """A certificate object's public certificate (Certificates API, ``certificates/get``).

        Only ``cer`` is read: the certificate object's secret, which holds the
        private key when it is exportable, is never touched, so the identity
        needs no secrets permission for it.
        """
        check_name("certificate", name)
        clients = self.clients(vault_url, auth)

        async def fetch() -> CertificateInfo:
            client = clients.certificates
            if version:
                cert = await client.get_certificate_version(name, version)
            else:
                cert = await client.get_certificate(name)
            props = cert.properties
            return CertificateInfo(
                vault_url=clients.vault_url,
                name=cert.name or name,
                version=str(props.version or "") if props is not None else "",
                id=str(cert.id),
                cer=bytes(cert.cer or b""),
                enabled=bool(props.enabled) if props is not None else True,
            )

        return await self._retrying.call("get_certificate", clients.vault_url, fetch)

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
        check_name("secret", name)
        clients = self.clients(vault_url, auth)

        async def put() -> SecretInfo:
            secret = await clients.secrets.set_secret(
                name, value, content_type=content_type, tags=tags
            )
            return SecretInfo(
                vault_url=clients.vault_url,
                name=secret.name or name,
                version=str(secret.properties.version or ""),
                id=str(secret.id),
                value=value,
                content_type=secret.properties.content_type,
                enabled=bool(secret.properties.enabled),
            )

        return await self._retrying.call("set_secret", clients.vault_url, put)

    async def is_soft_deleted(
        self, vault_url: str, kind: str, name: str, auth: AuthConfig
    ) -> bool | None:
        """Whether a soft-deleted ``kind`` ("key" or "secret") holds ``name``, so that
        creating one of that name would be refused (409); None when the identity may
        not read deleted objects (403), so the caller cannot tell beforehand."""
        check_name(kind, name)
        clients = self.clients(vault_url, auth)

        async def probe() -> bool:
            if kind == "key":
                await clients.keys.get_deleted_key(name)
            else:
                await clients.secrets.get_deleted_secret(name)
            return True

        try:
            return await self._retrying.call(f"get_deleted_{kind}", clients.vault_url, probe)
        except KeyVaultError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return False
            if err.kind is ErrorKind.FORBIDDEN:
                return None
            raise

    async def close(self) -> None:
        # A key lookup still in flight ends now; its callers get "closed" (_abandoned:
        # the pool counts as closed from before its first await).
        self._keys.cancel_all()
        await self._pool.close()
        self._cache.clear()

    async def __aenter__(self) -> KeyVaultAccess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class KeyVaultSigner:
    """The pki RemoteSigner for one Key Vault key version and identity."""

    def __init__(self, access: KeyVaultAccess, key: KeyInfo, auth: AuthConfig) -> None:
        self.access = access
        self.key = key
        self.auth = auth

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        return await self.access.sign(self.key, algorithm, digest, self.auth)

    def __repr__(self) -> str:
        return f"KeyVaultSigner(kid={self.key.kid!r})"
