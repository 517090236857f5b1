"""The only code that talks to Key Vault: clients per (vault, identity), caching, timeouts,
a per-vault concurrency limit, bounded retries and error classification."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_issuer.pki import SignatureAlgorithm

from .auth import AssertionProvider, AuthConfig, CredentialConfigError, make_credential
from .cloud import authority_for
from .errors import ErrorKind, KeyVaultError, classify

if TYPE_CHECKING:
    # The Key Vault SDK's clients are imported where they are first made (the
    # first call to a vault), not at start-up: they take ~0.27 s of CPU and
    # ~9 MiB to import (certificates alone 0.09 s and 3 MiB, and most issuers
    # never read a certificate object), and a replica is ready before then.
    from azure.keyvault.certificates.aio import CertificateClient
    from azure.keyvault.keys import JsonWebKey, KeyVaultKey
    from azure.keyvault.keys.crypto.aio import CryptographyClient

log = logging.getLogger(__name__)

T = TypeVar("T")
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}


@dataclass(frozen=True)
class KeyVaultOptions:
    """Behaviour of KeyVaultAccess.

    timeout: seconds for one call including retries, backoff and token acquisition.
    max_retries: extra attempts for THROTTLED/TRANSIENT failures inside that time; a wait
        longer than max_retry_wait (e.g. a long Retry-After) is not slept but surfaced.
    tls_ca_file: CA bundle trusted for a non-Azure endpoint (emulator, TLS-inspecting proxy);
        passed to the Key Vault clients and to the credential's pipeline.
    verify_challenge_resource: keep the SDK's check that the challenge resource matches the
        vault host; turn off only for endpoints that cannot satisfy it.
    """

    timeout: float = 10.0
    max_concurrency: int = 32
    tls_ca_file: str | None = None
    verify_challenge_resource: bool = True
    latest_ttl: float = 60.0
    version_ttl: float = 900.0
    max_retries: int = 2
    max_retry_wait: float = 2.0
    backoff: float = 0.2
    api_version: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> KeyVaultOptions:
        """Options with tls_ca_file taken from AKV_TLS_CA_FILE and api_version from
        AKV_KEYVAULT_API_VERSION (for a vault without the SDK's default version: Azure
        Stack Hub, a sovereign cloud that lags behind) unless given."""
        if "tls_ca_file" not in overrides and os.environ.get("AKV_TLS_CA_FILE"):
            overrides["tls_ca_file"] = os.environ["AKV_TLS_CA_FILE"]
        if "api_version" not in overrides and os.environ.get("AKV_KEYVAULT_API_VERSION"):
            overrides["api_version"] = os.environ["AKV_KEYVAULT_API_VERSION"]
        return cls(**overrides)

    def validate(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"Key Vault timeout must be positive, got {self.timeout}")
        if self.max_concurrency < 1:
            raise ValueError(
                f"Key Vault concurrency must be at least 1, got {self.max_concurrency}"
            )
        if self.max_retries < 0:
            raise ValueError(f"Key Vault retries must not be negative, got {self.max_retries}")
        if self.tls_ca_file is not None and not os.path.isfile(self.tls_ca_file):
            raise ValueError(f"TLS CA file {self.tls_ca_file!r} (AKV_TLS_CA_FILE) does not exist")


@dataclass(frozen=True)
class KeyInfo:
    vault_url: str
    name: str
    version: str
    kid: str
    kty: str
    public_key: PublicKey = field(repr=False, compare=False)
    enabled: bool
    key_ops: tuple[str, ...]
    not_before: dt.datetime | None = None
    expires: dt.datetime | None = None


# The content type a PEM CA certificate (chain) is stored under in a secret.
PEM_CONTENT_TYPE = "application/x-pem-file"


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key as Key Vault lists it (no key material)."""

    version: str
    enabled: bool
    created: dt.datetime | None


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret as Key Vault lists it (no value)."""

    version: str
    enabled: bool
    created: dt.datetime | None


@dataclass(frozen=True)
class SecretInfo:
    vault_url: str
    name: str
    version: str
    id: str
    value: str = field(repr=False)
    content_type: str | None
    enabled: bool = True


@dataclass(frozen=True)
class CertificateInfo:
    """The public part of a Key Vault certificate object, read through the
    Certificates API: ``cer`` is the DER of the certificate itself (no chain,
    never a private key)."""

    vault_url: str
    name: str
    version: str
    id: str
    cer: bytes = field(repr=False)
    enabled: bool = True


def normalize_vault_url(vault_url: str) -> str:
    """https://host[:port] without trailing slash; raises KeyVaultError for anything else."""
    parts = urlsplit(vault_url.strip())
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise KeyVaultError(
            ErrorKind.PERMANENT,
            f"vault URL {vault_url!r} must be an https URL such as https://myvault.vault.azure.net",
            code="BadParameter",
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise KeyVaultError(
            ErrorKind.PERMANENT,
            f"vault URL {vault_url!r} must not have a path, query or fragment",
            code="BadParameter",
        )
    return f"https://{parts.netloc.lower()}"


def _check_name(kind: str, name: str) -> None:
    if (
        not name
        or len(name) > 127
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in name)
    ):
        raise KeyVaultError(
            ErrorKind.PERMANENT,
            f"{kind} name {name!r} is invalid: use 1-127 letters, digits and dashes",
            code="BadParameter",
        )


def _text(value: Any) -> str:
    """An SDK enum member or plain string as its wire text (str() of an enum is its name)."""
    return str(getattr(value, "value", value) or "")


def _public_key(jwk: JsonWebKey) -> PublicKey:
    # JsonWebKey sets its fields dynamically, so they are read with getattr for the type checker.
    kty = _text(getattr(jwk, "kty", None))
    n, e = getattr(jwk, "n", None), getattr(jwk, "e", None)
    x, y, crv = getattr(jwk, "x", None), getattr(jwk, "y", None), getattr(jwk, "crv", None)
    if kty in ("RSA", "RSA-HSM") and n and e:
        numbers = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
        return numbers.public_key()
    if kty in ("EC", "EC-HSM") and x and y:
        curve = _CURVES.get(_text(crv))
        if curve is None:
            raise KeyVaultError(
                ErrorKind.PERMANENT, f"unsupported EC curve {crv!r}", code="UnsupportedKeyType"
            )
        point = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return point.public_key()
    raise KeyVaultError(
        ErrorKind.PERMANENT,
        f"key type {kty or 'unknown'} cannot sign certificates; use RSA, RSA-HSM, EC or EC-HSM",
        code="UnsupportedKeyType",
    )


def _key_info(vault_url: str, key: KeyVaultKey) -> KeyInfo:
    props = key.properties
    return KeyInfo(
        vault_url=vault_url,
        name=key.name,
        version=str(props.version or ""),
        kid=str(key.id),
        kty=_text(key.key_type),
        public_key=_public_key(key.key),
        enabled=bool(props.enabled),
        key_ops=tuple(_text(op) for op in (key.key_operations or [])),
        not_before=props.not_before,
        expires=props.expires_on,
    )


def _check_sign_request(key: KeyInfo, algorithm: SignatureAlgorithm, digest: bytes) -> None:
    """Refuse locally what Key Vault would refuse: wrong key type or digest length.

    The algorithm's facts (RSA or EC, its curve, its digest size) come from
    :class:`akv_issuer.pki.SignatureAlgorithm`; this layer only words the refusal
    as the vault's BadParameter, so a caller handles it like any permanent error.
    """
    if algorithm.is_rsa:
        if not isinstance(key.public_key, rsa.RSAPublicKey):
            raise KeyVaultError(
                ErrorKind.PERMANENT,
                f"algorithm {algorithm} needs an RSA key but {key.name} is {key.kty}",
                code="BadParameter",
                operation="sign",
            )
    else:
        curve = algorithm.curve
        if (
            curve is None
            or not isinstance(key.public_key, ec.EllipticCurvePublicKey)
            or not isinstance(key.public_key.curve, curve)
        ):
            on_curve = (
                f" on {key.public_key.curve.name}"
                if isinstance(key.public_key, ec.EllipticCurvePublicKey)
                else ""
            )
            raise KeyVaultError(
                ErrorKind.PERMANENT,
                f"algorithm {algorithm} needs an EC {_curve_name(curve)} key but {key.name} is "
                f"{key.kty}{on_curve}",
                code="BadParameter",
                operation="sign",
            )
    size = algorithm.hash_algorithm.digest_size
    if len(digest) != size:
        raise KeyVaultError(
            ErrorKind.PERMANENT,
            f"{algorithm} needs a {size}-byte digest, got {len(digest)} bytes",
            code="BadParameter",
            operation="sign",
        )


def _curve_name(curve: type[ec.EllipticCurve] | None) -> str:
    return next((name for name, c in _CURVES.items() if type(c) is curve), "unknown curve")


class _VaultClients:
    """One credential and one set of SDK clients for a (vault, identity)."""

    def __init__(
        self, vault_url: str, credential: AsyncTokenCredential, client_kwargs: dict[str, Any]
    ) -> None:
        self.vault_url = vault_url
        self.credential = credential
        self._kwargs = client_kwargs
        from azure.keyvault.keys.aio import KeyClient
        from azure.keyvault.secrets.aio import SecretClient

        self.keys = KeyClient(vault_url, credential, **client_kwargs)
        self.secrets = SecretClient(vault_url, credential, **client_kwargs)
        self._certificates: CertificateClient | None = None
        self._crypto: dict[str, CryptographyClient] = {}

    @property
    def certificates(self) -> CertificateClient:
        # Made on first use: most issuers never read a certificate object.
        if self._certificates is None:
            from azure.keyvault.certificates.aio import CertificateClient

            self._certificates = CertificateClient(self.vault_url, self.credential, **self._kwargs)
        return self._certificates

    def crypto(self, key: KeyInfo) -> CryptographyClient:
        client = self._crypto.get(key.kid)
        if client is None:
            # Built from the public JWK so the SDK does not fetch the key again before signing.
            jwk: dict[str, Any] = {"kid": key.kid, "kty": key.kty, "key_ops": list(key.key_ops)}
            if isinstance(key.public_key, rsa.RSAPublicKey):
                numbers = key.public_key.public_numbers()
                jwk["n"] = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
                jwk["e"] = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
            else:
                pub = key.public_key.public_numbers()
                length = (key.public_key.curve.key_size + 7) // 8
                crv = next(n for n, c in _CURVES.items() if c.name == key.public_key.curve.name)
                jwk.update(
                    crv=crv, x=pub.x.to_bytes(length, "big"), y=pub.y.to_bytes(length, "big")
                )
            from azure.keyvault.keys import KeyVaultKey
            from azure.keyvault.keys.crypto.aio import CryptographyClient

            client = CryptographyClient(
                KeyVaultKey(key_id=key.kid, jwk=jwk), self.credential, **self._kwargs
            )
            self._crypto[key.kid] = client
        return client

    async def close(self) -> None:
        clients: list[Any] = [self.keys, self.secrets, *self._crypto.values()]
        if self._certificates is not None:
            clients.append(self._certificates)
        for client in clients:
            try:
                await client.close()
            except Exception:
                log.debug("closing a Key Vault client failed", exc_info=True)
        self._crypto.clear()
        try:
            await self.credential.close()
        except Exception:
            log.debug("closing a credential failed", exc_info=True)


_KeyCacheKey = tuple[AuthConfig, str, str, str]


def _cache_name(name: str) -> str:
    """A key name as the caches hold it: Key Vault compares names case-insensitively
    and a key ID carries the stored case, which may differ from the requested one."""
    return name.lower()


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy ``environ`` names for an https ``url``, as curl and the Azure SDK
    read it: ``HTTPS_PROXY`` (or ``https_proxy``, then ``ALL_PROXY``), unless
    ``NO_PROXY`` (or ``no_proxy``) lists the host, a domain suffix of it, or ``*``.
    """

    def get(name: str) -> str:
        return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()

    proxy = get("https_proxy") or get("all_proxy")
    if not proxy:
        return None
    host = (urlsplit(url).hostname or "").lower()
    for raw in get("no_proxy").lower().split(","):
        # "example.com", ".example.com" and "example.com:443" all cover the
        # domain and its subdomains; an IPv6 literal keeps its colons.
        entry = raw.strip().lstrip(".")
        if entry.count(":") == 1:
            entry = entry.split(":")[0]
        if entry == "*":
            return None
        if entry and (host == entry or host.endswith("." + entry)):
            return None
    return proxy


class KeyVaultAccess:
    """One per process. All methods raise KeyVaultError, never SDK exceptions.

    Retries: the SDK's own retry policy is switched off (retry_total=0) so that one call is
    bounded by `timeout`. This layer retries THROTTLED and TRANSIENT failures at most
    `max_retries` times within that timeout, sleeping Retry-After when given (else a short
    jittered backoff) -- also for sign, which azure-core does not retry on a 429 without
    Retry-After. A wait longer than `max_retry_wait` or than the time left is not slept: the
    error is raised with retry_after so the caller's work queue can back off instead.
    """

    def __init__(
        self,
        options: KeyVaultOptions | None = None,
        *,
        assertion_provider: AssertionProvider | None = None,
    ) -> None:
        self.options = options or KeyVaultOptions.from_env()
        # The ServiceAccount tokens of FederatedServiceAccount identities (the controller's).
        self._assertion_provider = assertion_provider
        self.options.validate()
        self._clients: dict[tuple[str, AuthConfig], _VaultClients] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._keys: dict[_KeyCacheKey, tuple[KeyInfo, float]] = {}
        self._latest: dict[tuple[AuthConfig, str, str], tuple[str, float]] = {}
        self._inflight: dict[_KeyCacheKey, asyncio.Future[KeyInfo]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # ---- plumbing ----------------------------------------------------------------------

    def _client_kwargs(self, vault_url: str) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": opts.timeout,
            "read_timeout": opts.timeout,
            "verify_challenge_resource": opts.verify_challenge_resource,
        }
        if opts.api_version:
            kwargs["api_version"] = opts.api_version
        proxy = proxy_for(vault_url, os.environ)
        if proxy:
            kwargs["proxies"] = {"https": proxy}
        kwargs["transport"] = AioHttpTransport(session=self._http_session(), session_owner=False)
        return kwargs

    def _http_session(self) -> aiohttp.ClientSession:
        """One connection pool for every Key Vault client of this process.

        The SDK, given ``connection_verify=<file>``, builds a new SSL context per
        request, and aiohttp reuses a pooled connection only for the same context
        object: every sign would pay a fresh TLS handshake. One session whose
        connector holds one context keeps connections alive (and shares them
        between the keys, secrets and crypto clients).

        Without a CA file, ``ssl=True``: aiohttp's own default context, built
        from the system trust store when aiohttp is imported and already used by
        the credentials' pipelines, rather than a second copy of the same store
        (0.8 MiB and a parse of every system CA at the first vault call).
        """
        if self._session is None:
            ca_file = self.options.tls_ca_file
            tls: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=ca_file) if ca_file else True
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls),
                # No cookies and bodies left as sent, as the SDK's own sessions.
                # The environment's proxy is resolved once per vault
                # (_client_kwargs): with trust_env aiohttp would look up the
                # proxy variables and ~/.netrc in a thread on every request.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    def _credential_kwargs(self) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "retry_total": 1,
            "connection_timeout": opts.timeout,
            "read_timeout": opts.timeout,
        }
        if opts.tls_ca_file:
            kwargs["connection_verify"] = opts.tls_ca_file
        return kwargs

    def clients(self, vault_url: str, auth: AuthConfig) -> _VaultClients:
        if self._closed:
            raise KeyVaultError(ErrorKind.PERMANENT, "KeyVaultAccess is closed", code="Closed")
        vault = normalize_vault_url(vault_url)
        found = self._clients.get((vault, auth))
        if found is None:
            # The authority follows the vault's cloud (one credential per vault and identity).
            authority = authority_for(vault, auth.authority_host, os.environ)
            try:
                credential = make_credential(
                    auth,
                    self._assertion_provider,
                    authority=authority,
                    **self._credential_kwargs(),
                )
            except (CredentialConfigError, ValueError) as exc:
                raise KeyVaultError(
                    ErrorKind.PERMANENT, str(exc), code="CredentialConfiguration"
                ) from None
            found = _VaultClients(vault, credential, self._client_kwargs(vault))
            self._clients[(vault, auth)] = found
        return found

    def _semaphore(self, vault: str) -> asyncio.Semaphore:
        sem = self._semaphores.get(vault)
        if sem is None:
            sem = self._semaphores[vault] = asyncio.Semaphore(self.options.max_concurrency)
        return sem

    async def _call(
        self,
        operation: str,
        vault: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
    ) -> T:
        """Run fn with the retries described on the class. A call that is not idempotent
        (rotate: each success adds a key version) is retried only when throttled, which
        Key Vault answers before doing anything; a 5xx or a timeout may hide a success."""
        opts = self.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.timeout
        last: KeyVaultError | None = None
        attempt = 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        async with self._semaphore(vault):
                            return await fn()
                    except (asyncio.CancelledError, KeyboardInterrupt):
                        raise
                    except BaseException as exc:
                        if isinstance(exc, TimeoutError) and loop.time() >= deadline:
                            raise
                        last = classify(exc, operation=operation, vault_url=vault)
                    log.debug("Key Vault %s on %s failed: %s", operation, vault, last)
                    if not last.retryable or attempt >= opts.max_retries:
                        raise last
                    if not idempotent and last.kind is not ErrorKind.THROTTLED:
                        raise last
                    wait = last.retry_after
                    if wait is None:
                        wait = opts.backoff * (2**attempt) * (0.5 + random.random())
                    if wait > opts.max_retry_wait or loop.time() + wait >= deadline:
                        raise last
                    attempt += 1
                    await asyncio.sleep(wait)
        except TimeoutError:
            if last is not None and last.kind is ErrorKind.THROTTLED:
                raise last from None
            raise KeyVaultError(
                ErrorKind.TRANSIENT,
                f"no answer within {opts.timeout:g} s"
                + (f" (last error: {last})" if last is not None else ""),
                code="Timeout",
                operation=operation,
            ) from None

    # ---- keys --------------------------------------------------------------------------

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        """The key's public part and state; cached (latest briefly, versions longer)."""
        vault = normalize_vault_url(vault_url)
        _check_name("key", name)
        loop = asyncio.get_running_loop()
        now = loop.time()
        resolved = version or None
        cached_name = _cache_name(name)
        if resolved is None:
            pointer = self._latest.get((auth, vault, cached_name))
            if pointer is not None and pointer[1] > now:
                resolved = pointer[0]
        if resolved is not None:
            cached = self._keys.get((auth, vault, cached_name, resolved))
            if cached is not None and cached[1] > now:
                return cached[0]
        flight_key = (auth, vault, cached_name, version or "")
        inflight = self._inflight.get(flight_key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[KeyInfo] = loop.create_future()
        self._inflight[flight_key] = future
        try:
            info = await self._fetch_key(vault, name, version or None, auth)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # a lone caller must not leave "exception never retrieved"
            raise
        else:
            future.set_result(info)
            return info
        finally:
            self._inflight.pop(flight_key, None)

    async def _fetch_key(
        self, vault: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        clients = self.clients(vault, auth)

        async def fetch() -> KeyInfo:
            key = await clients.keys.get_key(name, version)
            return _key_info(vault, key)

        info = await self._call("get_key", vault, fetch)
        now = asyncio.get_running_loop().time()
        cached_name = _cache_name(name)
        self._keys[(auth, vault, cached_name, info.version)] = (
            info,
            now + self.options.version_ttl,
        )
        if version is None:
            self._latest[(auth, vault, cached_name)] = (
                info.version,
                now + self.options.latest_ttl,
            )
        return info

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
        _check_name("key", name)
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

        return await self._call("list_key_versions", vault, fetch)

    def _forget_latest(self, vault: str, name: str) -> None:
        """Drop every identity's "latest" pointer of a key that just got a new version."""
        for latest in [k for k in self._latest if k[1:] == (vault, _cache_name(name))]:
            del self._latest[latest]

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo:
        """Key Vault's rotate: a new version of the key with the same type, size or curve
        and key operations (and the expiry its rotation policy sets); needs the ``rotate``
        key permission. The key's cached "latest" pointer is dropped for every identity of
        this process, so the next lookup of "latest" asks the vault and finds the new
        version instead of the old one for up to ``latest_ttl``."""
        vault = normalize_vault_url(vault_url)
        _check_name("key", name)
        clients = self.clients(vault, auth)

        async def rotate() -> KeyInfo:
            key = await clients.keys.rotate_key(name)
            return _key_info(vault, key)

        try:
            info = await self._call("rotate_key", vault, rotate, idempotent=False)
        finally:
            # Even a failed call may have made a version (a 5xx after the work was done).
            self._forget_latest(vault, name)
        return info

    def invalidate(self, key: KeyInfo) -> None:
        """Forget what is cached about key (any identity), e.g. after it was refused."""
        name = _cache_name(key.name)
        for cache_key in [k for k in self._keys if k[1:] == (key.vault_url, name, key.version)]:
            del self._keys[cache_key]
        for latest in [k for k in self._latest if k[1:] == (key.vault_url, name)]:
            del self._latest[latest]

    async def sign(
        self, key: KeyInfo, algorithm: SignatureAlgorithm, digest: bytes, auth: AuthConfig
    ) -> bytes:
        """Key Vault's sign: the raw signature (EC: r||s) over digest with key's exact version."""
        _check_sign_request(key, algorithm, digest)
        clients = self.clients(key.vault_url, auth)
        crypto = clients.crypto(key)
        # pki's names are the JWS names Key Vault uses, so the SDK's enum takes them as they are.
        from azure.keyvault.keys.crypto import SignatureAlgorithm as AzureSignatureAlgorithm

        azure_alg = AzureSignatureAlgorithm(algorithm.value)

        async def sign() -> bytes:
            result = await crypto.sign(azure_alg, digest)
            return bytes(result.signature)

        try:
            return await self._call("sign", clients.vault_url, sign)
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
        _check_name("key", name)
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
            return _key_info(clients.vault_url, key)

        try:
            info = await self._call("create_key", clients.vault_url, create)
        finally:
            # A new version of an existing key is its new "latest", as after rotate_key.
            self._forget_latest(clients.vault_url, name)
        return info

    # ---- secrets -----------------------------------------------------------------------

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo:
        _check_name("secret", name)
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

        return await self._call("get_secret", clients.vault_url, fetch)

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]:
        """A secret's versions, newest first, at most ``limit`` of them, sorted
        as :meth:`list_key_versions` sorts key versions. Needs secrets
        ``list`` (``secrets/readMetadata/action``), which reading a value does
        not include."""
        _check_name("secret", name)
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

        return await self._call("list_secret_versions", clients.vault_url, fetch)

    # ---- certificates ------------------------------------------------------------------

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> CertificateInfo:
        """A certificate object's public certificate (Certificates API, ``certificates/get``).

        Only ``cer`` is read: the certificate object's secret, which holds the
        private key when it is exportable, is never touched, so the identity
        needs no secrets permission for it.
        """
        _check_name("certificate", name)
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

        return await self._call("get_certificate", clients.vault_url, fetch)

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
        _check_name("secret", name)
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

        return await self._call("set_secret", clients.vault_url, put)

    async def is_soft_deleted(
        self, vault_url: str, kind: str, name: str, auth: AuthConfig
    ) -> bool | None:
        """Whether a soft-deleted ``kind`` ("key" or "secret") holds ``name``, so that
        creating one of that name would be refused (409); None when the identity may
        not read deleted objects (403), so the caller cannot tell beforehand."""
        _check_name(kind, name)
        clients = self.clients(vault_url, auth)

        async def probe() -> bool:
            if kind == "key":
                await clients.keys.get_deleted_key(name)
            else:
                await clients.secrets.get_deleted_secret(name)
            return True

        try:
            return await self._call(f"get_deleted_{kind}", clients.vault_url, probe)
        except KeyVaultError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return False
            if err.kind is ErrorKind.FORBIDDEN:
                return None
            raise

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for item in clients:
            await item.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._keys.clear()
        self._latest.clear()

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
