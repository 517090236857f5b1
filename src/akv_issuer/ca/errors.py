"""What the CA rules refuse, as data: the CLI and the controller each say it
in their own words (a one-line CLI error naming the option to use, a Ready
reason), so the messages here are the plain facts.

A Key Vault error of a rule's own call passes through unchanged
(:class:`akv_issuer.keyvault.KeyVaultError`), except while the versions of a
key are scanned, where :class:`KeyVersionUnreadable` says which call failed.
"""

from __future__ import annotations

from akv_issuer.keyvault import KeyInfo, KeyVaultError


class CARuleError(Exception):
    """A CA rule cannot be applied; ``str()`` is one line."""


class CASecretNotFound(CARuleError):
    """The CA secret does not exist."""

    def __init__(self, secret_name: str) -> None:
        self.secret_name = secret_name
        super().__init__(f"secret {secret_name} not found")


class NoKeyVersionForCA(CARuleError):
    """The CA secret holds no certificate for any listed version of the key."""

    def __init__(self, secret_name: str, key_name: str, searched: int) -> None:
        self.secret_name = secret_name
        self.key_name = key_name
        self.searched = searched
        super().__init__(
            f"secret {secret_name} holds no certificate for any of the {searched} newest "
            f"versions of key {key_name}; it is not this key's CA"
        )


class KeyVersionUnreadable(CARuleError):
    """Key Vault failed while the key's versions were listed (``version`` None)
    or one of them was read."""

    def __init__(self, key_name: str, version: str | None, error: KeyVaultError) -> None:
        self.key_name = key_name
        self.version = version
        self.error = error
        super().__init__(str(error))


class SecretVersionsUnlisted(CARuleError):
    """The latest version of the CA secret holds no certificate for the key
    version, and the secret's older versions cannot be listed."""

    def __init__(self, secret_name: str, key: KeyInfo, error: KeyVaultError) -> None:
        self.secret_name = secret_name
        self.key = key
        self.error = error
        super().__init__(
            f"the latest version of secret {secret_name} holds no certificate for key version "
            f"{key.version}, and its older versions cannot be listed ({error})"
        )


class NoSecretVersionForKey(CARuleError):
    """None of the listed versions of the CA secret holds a certificate for the
    key version."""

    def __init__(self, secret_name: str, key: KeyInfo, searched: int) -> None:
        self.secret_name = secret_name
        self.key = key
        self.searched = searched
        super().__init__(
            f"none of the {searched} newest versions of secret {secret_name} holds a CA "
            f"certificate for key version {key.version} of {key.name}"
        )


class KeyNotUsable(CARuleError):
    """The key version cannot sign a CA certificate: disabled, or ``sign`` not
    among its operations."""


class NotACACertificate(CARuleError):
    """The certificate to renew is not a CA certificate."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"{subject} is not a CA certificate")


class NotARoot(CARuleError):
    """The CA to renew is an intermediate: its parent must sign it."""

    def __init__(self, subject: str, issuer: str) -> None:
        self.subject = subject
        self.issuer = issuer
        super().__init__(f"the CA {subject} is an intermediate issued by {issuer}")


class KeyExists(CARuleError):
    """A key that must be new exists already."""

    def __init__(self, key: KeyInfo) -> None:
        self.key = key
        super().__init__(f"key {key.kid} already exists")
