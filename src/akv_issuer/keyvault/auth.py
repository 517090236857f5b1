"""How the issuer authenticates to Key Vault, and the aio credential for each way."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import (
    ChainedTokenCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    EnvironmentCredential,
    WorkloadIdentityCredential,
)


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


AuthConfig = Ambient | WorkloadIdentity | ClientSecret


def _ambient(authority: str | None, pipeline: dict[str, Any]) -> AsyncTokenCredential:
    """DefaultAzureCredential, with ``authority`` honoured by its workload identity too.

    DefaultAzureCredential hands its ``authority`` to the environment credential but
    not to WorkloadIdentityCredential, which reads AZURE_AUTHORITY_HOST only (which
    the AKS webhook sets to the public cloud): with the webhook's variables present,
    the same chain is built by hand -- environment, workload identity, then the rest
    of DefaultAzureCredential -- each with the vault's authority.
    """
    if not authority:
        return DefaultAzureCredential(**pipeline)
    token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    client_id = os.environ.get("AZURE_CLIENT_ID")
    tenant_id = os.environ.get("AZURE_TENANT_ID")
    if not (token_file and client_id and tenant_id):
        return DefaultAzureCredential(authority=authority, **pipeline)
    return ChainedTokenCredential(
        EnvironmentCredential(authority=authority, **pipeline),
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


def make_credential(
    auth: AuthConfig, *, authority: str | None = None, **pipeline: Any
) -> AsyncTokenCredential:
    """A new aio credential for auth; pipeline carries transport options (connection_verify...).

    ``authority``: the Entra authority host for the vault this credential serves
    (:func:`.cloud.authority_for`); None leaves the SDK's default.
    """
    authority = authority or auth.authority_host
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
