"""Key Vault access: credentials, one client set per (vault, identity), caching, timeouts,
a per-vault concurrency limit and error classification (see docs/architecture.md)."""

from .access import (
    PEM_CONTENT_TYPE,
    CertificateInfo,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultOptions,
    KeyVaultSigner,
    KeyVersion,
    SecretInfo,
    normalize_vault_url,
)
from .auth import (
    Ambient,
    AssertionProvider,
    AssertionProviderError,
    AuthConfig,
    ClientSecret,
    CredentialConfigError,
    FederatedServiceAccount,
    WorkloadIdentity,
)
from .cloud import CLOUDS, Cloud, authority_for, cloud_of, is_managed_hsm
from .errors import (
    SERVICE_ACCOUNT_TOKEN_FAILED,
    Cause,
    ErrorKind,
    KeyVaultError,
    classify,
    parse_retry_after,
)

__all__ = [
    "CLOUDS",
    "PEM_CONTENT_TYPE",
    "SERVICE_ACCOUNT_TOKEN_FAILED",
    "Ambient",
    "AssertionProvider",
    "AssertionProviderError",
    "AuthConfig",
    "Cause",
    "CertificateInfo",
    "ClientSecret",
    "Cloud",
    "CredentialConfigError",
    "ErrorKind",
    "FederatedServiceAccount",
    "KeyInfo",
    "KeyVaultAccess",
    "KeyVaultError",
    "KeyVaultOptions",
    "KeyVaultSigner",
    "KeyVersion",
    "SecretInfo",
    "WorkloadIdentity",
    "authority_for",
    "classify",
    "cloud_of",
    "is_managed_hsm",
    "normalize_vault_url",
    "parse_retry_after",
]
