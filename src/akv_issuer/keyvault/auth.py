"""How the issuer authenticates to Key Vault, and the aio credential for each way.

A ServiceAccount token exchange (:class:`FederatedServiceAccount`) needs a token
that only Kubernetes can mint. This layer does not talk to Kubernetes: whoever
builds :class:`~akv_issuer.keyvault.KeyVaultAccess` injects an
:data:`AssertionProvider` that returns one (and caches it), and failures come
back as :class:`AssertionProviderError`, which names no Kubernetes type.

azure-identity (with msal) is imported where a credential is first made, not when
this module is: it is about a quarter of the controller's import time and 8 MiB,
and start-up (probes, informers, leader election) needs none of it
(docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential


@dataclass(frozen=True)
class Ambient:
    """DefaultAzureCredential: workload identity on AKS, managed identity, environment, CLI.

    ``authority_host`` None: the vault's cloud decides (see :mod:`.cloud`)."""

    authority_host: str | None = None


@dataclass(frozen=True)
class WorkloadIdentity:
    """Federated service-account token exchange.

    Unset fields come from the environment the AKS webhook injects: AZURE_CLIENT_ID,
    AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE.
    """

    client_id: str | None = None
    tenant_id: str | None = None
    token_file: str | None = None
    authority_host: str | None = None


@dataclass(frozen=True)
class ClientSecret:
    tenant_id: str
    client_id: str
    secret: str = field(repr=False)
    authority_host: str | None = None


@dataclass(frozen=True)
class FederatedServiceAccount:
    """Exchange a token of the ServiceAccount ``namespace``/``name`` (with ``audiences``)
    for the Entra ID identity ``client_id`` in ``tenant_id``.

    Only data, so it is hashable and one credential is kept per (vault, identity); the
    token itself comes from the access layer's :data:`AssertionProvider`.
    """

    namespace: str
    name: str
    client_id: str
    tenant_id: str
    audiences: tuple[str, ...] = ("api://AzureADTokenExchange",)
    authority_host: str | None = None


AuthConfig = Ambient | WorkloadIdentity | ClientSecret | FederatedServiceAccount

AssertionProvider = Callable[[FederatedServiceAccount], Awaitable[str]]
"""Returns a current (cached) ServiceAccount token for the identity; raises
:class:`AssertionProviderError` when it cannot."""


class AssertionProviderError(Exception):
    """The token to exchange could not be obtained. ``retryable``: it may work later
    (the API server was unreachable); else the ServiceAccount is missing or the
    controller may not create tokens for it. The message never holds a token."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


# What EnvironmentCredential needs besides AZURE_CLIENT_ID and AZURE_TENANT_ID.
_ENVIRONMENT_CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
)


def _ambient(authority: str | None, pipeline: dict[str, Any]) -> AsyncTokenCredential:
    """DefaultAzureCredential, with ``authority`` honoured by its workload identity too.

    DefaultAzureCredential hands its ``authority`` to the environment credential but
    not to WorkloadIdentityCredential, which reads AZURE_AUTHORITY_HOST only (which
    the AKS webhook sets to the public cloud): with the webhook's variables present,
    the same chain is built by hand -- environment, workload identity, then the rest
    of DefaultAzureCredential -- each with the vault's authority.
    """
    from azure.identity.aio import (
        ChainedTokenCredential,
        DefaultAzureCredential,
        EnvironmentCredential,
        WorkloadIdentityCredential,
    )

    if not authority:
        return DefaultAzureCredential(**pipeline)
    token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    client_id = os.environ.get("AZURE_CLIENT_ID")
    tenant_id = os.environ.get("AZURE_TENANT_ID")
    if not (token_file and client_id and tenant_id):
        return DefaultAzureCredential(authority=authority, **pipeline)
    # EnvironmentCredential warns on stderr when it is built without a complete
    # service-principal configuration (DefaultAzureCredential silences that):
    # only chain it when there is one.
    environment: list[AsyncTokenCredential] = (
        [EnvironmentCredential(authority=authority, **pipeline)]
        if any(os.environ.get(v) for v in _ENVIRONMENT_CREDENTIAL_VARIABLES)
        else []
    )
    return ChainedTokenCredential(
        *environment,
        WorkloadIdentityCredential(
            tenant_id=tenant_id,
            client_id=client_id,
            token_file_path=token_file,
            authority=authority,
            **pipeline,
        ),
        DefaultAzureCredential(
            authority=authority,
            exclude_environment_credential=True,
            exclude_workload_identity_credential=True,
            **pipeline,
        ),
    )


class CredentialConfigError(ValueError):
    """The auth configuration cannot produce a credential (missing token file, tenant, ...)."""


class FederatedServiceAccountCredential(AsyncTokenCredential):
    """azure-identity's ClientAssertionCredential with the provider's ServiceAccount token.

    ClientAssertionCredential calls its ``func`` synchronously, and only when it has
    no cached Entra token; the provider is async (a TokenRequest). So every
    ``get_token`` first awaits the provider (a cache hit but for once an hour) and
    the ``func`` returns what it gave. Entra access tokens stay cached by
    azure-identity as for every other credential.
    """

    def __init__(
        self, auth: FederatedServiceAccount, provider: AssertionProvider, **kwargs: Any
    ) -> None:
        self._auth = auth
        self._provider = provider
        self._assertion = ""
        from azure.identity.aio import ClientAssertionCredential

        self._inner = ClientAssertionCredential(
            auth.tenant_id, auth.client_id, self._current_assertion, **kwargs
        )

    def _current_assertion(self) -> str:
        return self._assertion

    async def _refresh_assertion(self) -> None:
        self._assertion = await self._provider(self._auth)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        await self._refresh_assertion()
        return await self._inner.get_token(
            *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
        )

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        await self._refresh_assertion()
        return await self._inner.get_token_info(*scopes, options=options)

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> FederatedServiceAccountCredential:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


def make_credential(
    auth: AuthConfig,
    provider: AssertionProvider | None = None,
    *,
    authority: str | None = None,
    **pipeline: Any,
) -> AsyncTokenCredential:
    """A new aio credential for auth; pipeline carries transport options (connection_verify...).

    ``provider`` is needed for a FederatedServiceAccount only. ``authority``: the
    Entra authority host for the vault this credential serves
    (:func:`.cloud.authority_for`, which already puts the identity's own
    ``authority_host`` first); None for both leaves the SDK's default.
    """
    from azure.identity.aio import ClientSecretCredential, WorkloadIdentityCredential

    authority = authority or auth.authority_host
    if isinstance(auth, FederatedServiceAccount):
        if provider is None:
            raise CredentialConfigError(
                "a ServiceAccount token exchange needs a token provider (only the controller "
                "has one)"
            )
        if not auth.client_id or not auth.tenant_id:
            raise CredentialConfigError(
                "a ServiceAccount token exchange needs a client id and a tenant id (or "
                "AZURE_TENANT_ID in the controller's environment)"
            )
        extra = {"authority": authority} if authority else {}
        return FederatedServiceAccountCredential(auth, provider, **extra, **pipeline)
    if isinstance(auth, Ambient):
        return _ambient(authority, pipeline)
    if isinstance(auth, WorkloadIdentity):
        token_file = auth.token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
        if not token_file:
            raise CredentialConfigError(
                "workload identity needs a token file: set AZURE_FEDERATED_TOKEN_FILE "
                "(the AKS workload identity webhook does) or configure one"
            )
        client_id = auth.client_id or os.environ.get("AZURE_CLIENT_ID")
        tenant_id = auth.tenant_id or os.environ.get("AZURE_TENANT_ID")
        if not client_id or not tenant_id:
            raise CredentialConfigError(
                "workload identity needs a client id and a tenant id (or AZURE_CLIENT_ID and "
                "AZURE_TENANT_ID in the environment)"
            )
        extra = {"authority": authority} if authority else {}
        return WorkloadIdentityCredential(
            tenant_id=tenant_id,
            client_id=client_id,
            token_file_path=token_file,
            **extra,
            **pipeline,
        )
    if not auth.client_id or not auth.tenant_id or not auth.secret:
        raise CredentialConfigError(
            "a client secret identity needs tenant id, client id and secret"
        )
    extra = {"authority": authority} if authority else {}
    return ClientSecretCredential(auth.tenant_id, auth.client_id, auth.secret, **extra, **pipeline)
