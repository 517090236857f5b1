"""Key Vault access: credentials, one client set per (vault, identity), caching, timeouts,
a per-vault concurrency limit and error classification (see docs/architecture.md)."""

from .access import (
    PEM_CONTENT_TYPE,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultOptions,
    KeyVaultSigner,
    KeyVersion,
    SecretInfo,
    normalize_vault_url,
)
from .auth import Ambient, AuthConfig, ClientSecret, CredentialConfigError, WorkloadIdentity
from .errors import ErrorKind, KeyVaultError, classify, parse_retry_after

__all__ = [
    "PEM_CONTENT_TYPE",
    "Ambient",
    "AuthConfig",
    "ClientSecret",
    "CredentialConfigError",
    "ErrorKind",
    "KeyInfo",
    "KeyVaultAccess",
    "KeyVaultError",
    "KeyVaultOptions",
    "KeyVaultSigner",
    "KeyVersion",
    "SecretInfo",
    "WorkloadIdentity",
    "classify",
    "normalize_vault_url",
    "parse_retry_after",
]
