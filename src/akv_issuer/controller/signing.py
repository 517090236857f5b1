"""From an approved request to a signed certificate, for both request kinds.

cert-manager CertificateRequests and Kubernetes CertificateSigningRequests
differ in where their inputs live and how a result is written, not in how a
certificate is made. This module is the shared middle: it takes the CSR and
the issuance parameters already read from the request, builds the
certificate, has Key Vault sign it (holding one of the ``--concurrency`` sign
slots only for that remote call) and says how it went, as one of four
outcomes the callers map onto their own status fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cryptography import x509
from prometheus_client import Gauge

from akv_issuer.controller.api import IssuerReason
from akv_issuer.controller.audit import CAKey
from akv_issuer.controller.issuers import (
    CheckedIssuer,
    CheckFailed,
    IssuerChecker,
    IssuerKey,
    ca_failure,
    keyvault_failure,
)
from akv_issuer.controller.metrics import Metrics
from akv_issuer.keyvault import KeyVaultAccess, KeyVaultError
from akv_issuer.pki import (
    AlgorithmError,
    CAError,
    CSRError,
    IssuanceRequest,
    PolicyError,
    RemoteSigner,
    SignatureAlgorithm,
    SignatureError,
    build_certificate,
    parse_csr,
    sign_certificate,
)

__all__ = [
    "IssuerFault",
    "Outcome",
    "Refused",
    "RequestSigner",
    "SignSlots",
    "Signed",
    "Transient",
]


@dataclass(frozen=True, slots=True)
class Signed:
    certificate_pem: bytes  # the leaf, then the intermediates below the root
    ca_pem: bytes  # the root, or the top of the chain
    issuer: IssuerKey
    # For the audit record and the Issued event (kept with the certificate, so
    # a retried status write records the same facts without the issuer).
    leaf: x509.Certificate
    ca_key: CAKey


@dataclass(frozen=True, slots=True)
class Refused:
    """The request can never succeed: its CSR or parameters are wrong."""

    kind: str  # InvalidCSR, PolicyViolation or InvalidRequest
    reason: str

    @property
    def message(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Transient:
    """Key Vault throttled or could not be reached: try again later."""

    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class IssuerFault:
    """Signing showed the issuer cannot sign (key gone, CA does not match)."""

    failure: CheckFailed
    # The issuer check will find the same fault (the CA stopped being valid
    # since the last check): check at once rather than after a backoff.
    recheck_now: bool = False


Outcome = Signed | Refused | Transient | IssuerFault


class SignSlots:
    """At most ``size`` Key Vault signs in flight, process-wide."""

    def __init__(self, size: int, in_flight: Gauge) -> None:
        self._semaphore = asyncio.Semaphore(size)
        self._in_flight = in_flight

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._semaphore:
            self._in_flight.inc()
            try:
                yield
            finally:
                self._in_flight.dec()


class _SlottedSigner:
    """The Key Vault signer, counted per status code, holding a sign slot for
    exactly the duration of the remote call."""

    def __init__(self, inner: RemoteSigner, checker: IssuerChecker, slots: SignSlots) -> None:
        self._inner = inner
        self._checker = checker
        self._slots = slots

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        async with self._slots.hold():
            result: bytes = await self._checker.kv_call(
                "sign", self._inner.sign_digest(algorithm, digest)
            )
        return result


class RequestSigner:
    def __init__(
        self,
        keyvault: KeyVaultAccess,
        checker: IssuerChecker,
        metrics: Metrics,
        concurrency: int,
    ) -> None:
        self._kv = keyvault
        self._checker = checker
        self._metrics = metrics
        self._slots = SignSlots(concurrency, metrics.signs_in_flight)

    def remote_signer(self, checked: CheckedIssuer) -> RemoteSigner:
        """The issuer's Key Vault signer, counted and holding a sign slot per call
        (for CRLs, which share the ``--concurrency`` slots with certificates)."""
        return _SlottedSigner(
            self._kv.signer(checked.key_info, checked.auth), self._checker, self._slots
        )

    async def sign(
        self,
        csr_pem: bytes,
        request: IssuanceRequest,
        checked: CheckedIssuer,
        now: dt.datetime,
    ) -> Outcome:
        started = time.perf_counter()
        try:
            csr = parse_csr(csr_pem)
            plan = build_certificate(csr, request, checked.ca_cert, checked.profile, now)
        except CSRError as err:
            return Refused("InvalidCSR", err.reason)
        except PolicyError as err:
            return Refused("PolicyViolation", err.reason)
        except CAError as err:
            # The CA was valid at the issuer check and is not now (it expired,
            # or its clock-skewed NotBefore is still ahead): not the request's
            # fault. The issuer goes not Ready with the CA's own reason.
            return IssuerFault(ca_failure(err, checked.spec.ca_description), recheck_now=True)

        signer = _SlottedSigner(
            self._kv.signer(checked.key_info, checked.auth), self._checker, self._slots
        )
        try:
            certificate = await sign_certificate(
                plan.builder, checked.key_info.public_key, checked.algorithm, signer
            )
        except KeyVaultError as err:
            if not err.retryable:
                return IssuerFault(
                    keyvault_failure(
                        err,
                        f"signing with key {checked.spec.key_name!r}",
                        IssuerReason.KEY_NOT_FOUND,
                    )
                )
            return Transient(f"Key Vault: {err.message or err.kind.name}", err.retry_after)
        except SignatureError as err:
            return IssuerFault(CheckFailed(IssuerReason.CA_KEY_MISMATCH, err.reason))
        except AlgorithmError as err:
            return IssuerFault(CheckFailed(IssuerReason.KEY_NOT_USABLE, err.reason))
        except (TimeoutError, OSError) as err:
            return Transient(f"{type(err).__name__}: {err}", None)
        self._metrics.sign_seconds.labels(*checked.key.labels).observe(
            time.perf_counter() - started
        )
        # sign_certificate verified the signature with the CA key; the chain's
        # order is worked out once per chain.
        cert_pem, ca_pem = checked.ca.split(certificate)
        return Signed(cert_pem, ca_pem, checked.key, certificate, CAKey.of(checked))
