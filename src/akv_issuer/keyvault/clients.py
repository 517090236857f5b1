"""The Key Vault SDK clients: one credential and one set of clients per (vault,
identity), all sharing one HTTP connection pool, with the SDK's own retries off
(this layer retries, see :mod:`.retry`) and the environment's proxy."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport

from .auth import AssertionProvider, AuthConfig, CredentialConfigError, make_credential
from .cloud import authority_for
from .errors import ErrorKind, KeyVaultError
from .jwk import jwk_of
from .models import KeyInfo, KeyVaultOptions, normalize_vault_url

if TYPE_CHECKING:
    # The Key Vault SDK's clients are imported where they are first made (the
    # first call to a vault), not at start-up: they take ~0.27 s of CPU and
    # ~9 MiB to import (certificates alone 0.09 s and 3 MiB, and most issuers
    # never read a certificate object), and a replica is ready before then.
    from azure.keyvault.certificates.aio import CertificateClient
    from azure.keyvault.keys.crypto.aio import CryptographyClient

log = logging.getLogger(__name__)


class VaultClients:
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
            from azure.keyvault.keys import KeyVaultKey
            from azure.keyvault.keys.crypto.aio import CryptographyClient

            client = CryptographyClient(
                KeyVaultKey(key_id=key.kid, jwk=jwk_of(key)), self.credential, **self._kwargs
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


class ClientPool:
    """The :class:`VaultClients` of one process, made on first use per (vault, identity)."""

    def __init__(
        self, options: KeyVaultOptions, assertion_provider: AssertionProvider | None = None
    ) -> None:
        self.options = options
        # The ServiceAccount tokens of FederatedServiceAccount identities (the controller's).
        self._assertion_provider = assertion_provider
        self._clients: dict[tuple[str, AuthConfig], VaultClients] = {}
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    def get(self, vault_url: str, auth: AuthConfig) -> VaultClients:
        if self.closed:
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
            found = VaultClients(vault, credential, self._client_kwargs(vault))
            self._clients[(vault, auth)] = found
        return found

    async def close(self) -> None:
        self.closed = True
        clients, self._clients = list(self._clients.values()), {}
        for item in clients:
            await item.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

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
