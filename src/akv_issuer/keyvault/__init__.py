"""Key Vault access: credentials, one client set per (vault, identity), caching, timeouts,
a per-vault concurrency limit and error classification (see docs/architecture.md).

Modules: :mod:`.access` (``KeyVaultAccess``, the facade), :mod:`.models` (options and
the values read from a vault), :mod:`.jwk` (JSON Web Keys), :mod:`.clients` (the SDK
clients per vault and identity), :mod:`.retry` (time limit, retries, per-vault
concurrency), :mod:`.budget` (Key Vault's weighted 10-second limits per vault, kept
on the client side), :mod:`.cache` (the key cache, shared lookups), :mod:`.auth`,
:mod:`.cloud`, :mod:`.errors`. Everything public is importable from the package.
"""

from .access import KeyVaultAccess, KeyVaultSigner
from .attestation import (
    AttestationError,
    AttestationRoot,
    AttestationSummary,
    KeyAttestation,
    check_attestation,
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
from .budget import (
    BUDGET_SPENT,
    KEY_LIMITS,
    BudgetConfig,
    VaultBudgets,
    VaultWindow,
    cost_of,
    key_cost,
)
from .clients import proxy_for
from .cloud import CLOUDS, Cloud, authority_for, cloud_of, is_managed_hsm
from .errors import (
    SERVICE_ACCOUNT_TOKEN_FAILED,
    Cause,
    ErrorKind,
    KeyVaultError,
    classify,
    parse_retry_after,
)
from .models import (
    PEM_CONTENT_TYPE,
    CertificateInfo,
    KeyInfo,
    KeyVaultOptions,
    KeyVersion,
    SecretInfo,
    SecretVersion,
    normalize_vault_url,
)

__all__ = [
    "BUDGET_SPENT",
    "CLOUDS",
    "KEY_LIMITS",
    "PEM_CONTENT_TYPE",
    "SERVICE_ACCOUNT_TOKEN_FAILED",
    "Ambient",
    "AssertionProvider",
    "AssertionProviderError",
    "AttestationError",
    "AttestationRoot",
    "AttestationSummary",
    "AuthConfig",
    "BudgetConfig",
    "Cause",
    "CertificateInfo",
    "ClientSecret",
    "Cloud",
    "CredentialConfigError",
    "ErrorKind",
    "FederatedServiceAccount",
    "KeyAttestation",
    "KeyInfo",
    "KeyVaultAccess",
    "KeyVaultError",
    "KeyVaultOptions",
    "KeyVaultSigner",
    "KeyVersion",
    "SecretInfo",
    "SecretVersion",
    "VaultBudgets",
    "VaultWindow",
    "WorkloadIdentity",
    "authority_for",
    "check_attestation",
    "classify",
    "cloud_of",
    "cost_of",
    "is_managed_hsm",
    "key_cost",
    "normalize_vault_url",
    "parse_retry_after",
    "proxy_for",
]
