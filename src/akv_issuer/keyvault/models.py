"""The values of the Key Vault layer: options, what a key, secret or certificate
read from a vault looks like, and the checks on names and vault URLs made
before any request."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import ErrorKind, KeyVaultError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


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
    # Secure key release: the private key can leave Key Vault (keys.json 2025-07-01
    # KeyAttributes.exportable, KeyBundle.release_policy).
    exportable: bool = False
    has_release_policy: bool = False


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


def check_name(kind: str, name: str) -> None:
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
