"""Errors raised by the PKI core.

Every error carries ``reason``: one line of plain text that is safe to show to
the user who created the request (it becomes a CertificateRequest condition
message), so it never contains key material or multi-line dumps.
"""

from __future__ import annotations

import enum

__all__ = [
    "AlgorithmError",
    "CAError",
    "CAErrorKind",
    "CSRError",
    "PKIError",
    "PolicyError",
    "SignatureError",
]


def _one_line(reason: str) -> str:
    # Condition messages are rendered on one line by kubectl; a stray newline
    # from an underlying library message would break that.
    return " ".join(reason.split())


class PKIError(Exception):
    """Base class of every error raised by :mod:`akv_issuer.pki`."""

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(reason)
        super().__init__(self.reason)


class CSRError(PKIError):
    """The CSR is malformed, unverifiable, uses a refused key, or conflicts with
    the request. Such a request can never succeed."""


class PolicyError(PKIError):
    """The request is well formed but the issuer's policy refuses it (or the
    request itself is invalid, e.g. an unknown usage). Never succeeds on retry."""


class SignatureError(PKIError):
    """The remote signature could not be assembled or does not verify against the
    CA public key. The certificate is never returned in that case."""


class AlgorithmError(PKIError):
    """The signature algorithm does not fit the CA key (issuer misconfiguration)."""


class CAErrorKind(enum.StrEnum):
    INVALID = "invalid"
    NOT_A_CA = "not-a-ca"
    MISMATCH = "mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"


class CAError(PKIError):
    """The CA certificate (or bundle) cannot be used to issue certificates."""

    def __init__(self, kind: CAErrorKind, reason: str) -> None:
        self.kind = kind
        super().__init__(reason)
