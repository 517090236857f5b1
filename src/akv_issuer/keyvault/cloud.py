"""Which Azure cloud a vault lives in, read from its host name.

Why here: a vault in Azure China or US Government only accepts tokens from that
cloud's Entra ID, and until now the authority came only from the process-wide
``AZURE_AUTHORITY_HOST``, so one controller could not serve vaults of two
clouds. The vault's DNS suffix names its cloud unambiguously, so the authority
follows from the URL the issuer already has. The token *scope* is not derived
here: the Key Vault SDK takes it from the vault's 401 challenge
(``resource="https://vault.azure.cn"``, ``https://managedhsm.azure.net`` ...),
so nothing in this project names a scope.

Precedence of the authority for one vault (see :func:`authority_for`): an
explicit per-issuer ``authority_host`` > the cloud of a known suffix >
``AZURE_AUTHORITY_HOST`` > the SDK's default (public cloud). The environment
variable stays the fallback for hosts no table here knows (private endpoints
with custom names, the emulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    vault_suffix: str
    managed_hsm_suffix: str


CLOUDS: Final = (
    Cloud(
        "AzurePublicCloud",
        "https://login.microsoftonline.com",
        ".vault.azure.net",
        ".managedhsm.azure.net",
    ),
    Cloud(
        "AzureChinaCloud",
        "https://login.chinacloudapi.cn",
        ".vault.azure.cn",
        ".managedhsm.azure.cn",
    ),
    Cloud(
        "AzureUSGovernment",
        "https://login.microsoftonline.us",
        ".vault.usgovcloudapi.net",
        ".managedhsm.usgovcloudapi.net",
    ),
)


def _host(vault_url: str) -> str:
    return (urlsplit(vault_url.strip()).hostname or "").lower().rstrip(".")


def cloud_of(vault_url: str) -> Cloud | None:
    """The cloud whose vault or Managed HSM suffix the URL's host ends with, else None."""
    host = _host(vault_url)
    for cloud in CLOUDS:
        if host.endswith((cloud.vault_suffix, cloud.managed_hsm_suffix)):
            return cloud
    return None


def is_managed_hsm(vault_url: str) -> bool:
    """Whether the URL names a Managed HSM (``<name>.managedhsm.<cloud suffix>``),
    which holds keys only: no secrets, no certificates."""
    host = _host(vault_url)
    return any(host.endswith(cloud.managed_hsm_suffix) for cloud in CLOUDS)


def authority_for(vault_url: str, explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The Entra authority host to request tokens for this vault from.

    None leaves the SDK's own default (the public cloud). ``explicit`` is a
    per-issuer setting and always wins; then the vault's cloud; then
    ``AZURE_AUTHORITY_HOST``.
    """
    if explicit:
        return explicit.rstrip("/")
    cloud = cloud_of(vault_url)
    if cloud is not None:
        return cloud.authority_host
    fallback = (environ.get("AZURE_AUTHORITY_HOST") or "").strip()
    return fallback.rstrip("/") or None
