"""From an approved request to a signed certificate, for every request kind.

cert-manager CertificateRequests, Kubernetes CertificateSigningRequests and
PodCertificateRequests differ in where their inputs live and how a result is written, not in how a
certificate is made. This module is the shared middle: it takes the CSR and
the issuance parameters already read from the request, builds the
certificate, has Key Vault sign it (holding one of the ``--concurrency`` sign
slots only for each request sent) and says how it went, as one of four
outcomes the callers map onto their own status fields.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from akv_issuer.controller.api import IssuerReason
from akv_issuer.controller.core import (
    CheckedIssuer,
    CheckFailed,
    IssuerKey,
    KeyVaultGateway,
    ca_failure,
    keyvault_failure,
    keyvault_failure_text,
)
from akv_issuer.controller.core.keyvault_gateway import MEMBER_SET_ASIDE
from akv_issuer.controller.core.pool import MemberRef, order_members, soonest_retry
from akv_issuer.controller.observability.audit import CAKey
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.keyvault import BUDGET_SPENT, ErrorKind, KeyVaultError
from akv_issuer.pki import (
    AlgorithmError,
    CAError,
    CertificatePlan,
    CSRError,
    IssuanceRequest,
    PolicyError,
    SignatureError,
    build_certificate,
    derived_serial_number,
    parse_csr,
    sign_certificate,
)

log = logging.getLogger(__name__)

__all__ = [
    "IssuerFault",
    "Outcome",
    "RequestRefused",
    "RequestSigner",
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
class RequestRefused:
    """The request can never succeed: its CSR or parameters are wrong."""

    kind: str  # InvalidCSR, PolicyViolation or InvalidRequest
    reason: str

    @property
    def message(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Transient:
    """Key Vault throttled or could not be reached: try again later. ``deferred``:
    nothing was asked of Key Vault -- the vault's throttling budget had this
    issuer's calls waiting already (keyvault.budget): come back after
    ``retry_after``, neither a failure nor worth a status write. ``set_aside``:
    nothing was asked of the CA pool member's vault either -- its breaker opened
    while the request waited (another request found it failing)."""

    message: str
    retry_after: float | None
    throttled: bool = False  # Key Vault answered 429 (else unreachable, 5xx, timeout)
    deferred: bool = False
    set_aside: bool = False


@dataclass(frozen=True, slots=True)
class IssuerFault:
    """Signing showed the issuer cannot sign (key gone, CA does not match)."""

    failure: CheckFailed
    # The issuer check will find the same fault (the CA stopped being valid
    # since the last check): check at once rather than after a backoff.
    recheck_now: bool = False


Outcome = Signed | RequestRefused | Transient | IssuerFault


# Certificates are built for the start of the 5-minute step (counted from the
# request's creation) that ``now`` falls in, so replicas and retries agree on
# the validity; NotBefore is thus at most this much earlier than otherwise.
PLAN_STEP = dt.timedelta(minutes=5)
# A certificate whose NotBefore must be close to the time of signing
# (IssuanceRequest.not_before_now: the PodCertificateRequest API takes it only
# within 5 minutes of the API server's clock) is planned in 1-minute steps.
NOW_PLAN_STEP = dt.timedelta(minutes=1)


def plan_time(
    created: dt.datetime | None,
    now: dt.datetime,
    ca_cert: x509.Certificate,
    step: dt.timedelta = PLAN_STEP,
) -> dt.datetime:
    """The time a request's certificate is built for: the same on every replica
    within a step; ``now`` when the request's clock is ahead of ours."""
    if created is None or created > now:
        return now
    at = created + ((now - created) // step) * step
    ca_not_before = ca_cert.not_valid_before_utc
    # Not before the CA (a CA rotated since the request was created).
    return max(at, ca_not_before) if ca_not_before <= now else now


def request_serial(
    request_key: str,
    csr_pem: bytes,
    request: IssuanceRequest,
    checked: CheckedIssuer,
    at: dt.datetime,
) -> int:
    """The serial of the request's certificate, from every input of it: the
    request (uid, CSR, parameters), the issuer object's uid and generation
    (its profile), the CA certificate, the key version and algorithm, the
    validity's time. Two different certificates never share a serial."""
    parameters: tuple[object, ...] = (
        request.duration,
        tuple(request.usages),
        request.is_ca,
        request.path_length,
    )
    if request.names:
        # A signer-chosen identity (PodCertificateRequests); absent for the
        # other kinds, whose serials stay as they were.
        parameters += (tuple(str(name.value) for name in request.names),)
    return derived_serial_number(
        request_key.encode(),
        csr_pem,
        repr(parameters).encode(),
        f"{checked.uid}/{checked.generation}".encode(),
        checked.ca.ca_der,
        checked.key_info.kid.encode(),
        str(checked.algorithm.value).encode(),
        at.isoformat().encode(),
    )


class RequestSigner:
    def __init__(
        self,
        keyvault: KeyVaultGateway,
        metrics: Metrics,
        *,
        member_changed: Callable[[IssuerKey], None] | None = None,
    ) -> None:
        """``member_changed(issuer)``: a pool member of ``issuer`` was set aside or came
        back while signing (the issuers side re-checks it, so status.members follows)."""
        self._kv = keyvault
        self._metrics = metrics
        self._member_changed = member_changed or (lambda _issuer: None)
        # By request uid: the plan of a sign that failed transiently (see sign()).
        self._kept: dict[str, _KeptPlan] = {}

    def forget(self, request_key: str) -> None:
        """The request is finished or gone: drop a plan kept for its retry."""
        self._kept.pop(request_key, None)

    async def sign(
        self,
        csr_pem: bytes,
        request: IssuanceRequest,
        checked: CheckedIssuer,
        now: dt.datetime,
        *,
        request_key: str | None = None,
        created: dt.datetime | None = None,
    ) -> Outcome:
        """``request_key`` (the request's uid) and ``created`` (its creation
        time) make the certificate a function of the request: a retry after a
        transient failure, or another replica after this one died or lost its
        lease between Key Vault's signature and the status write, signs the
        *same* certificate (serial and validity), never a second one. Key Vault
        may have signed before the answer was lost.

        A CA pool (``checked.members``) signs with one member (:meth:`_sign_pool`)."""
        if checked.members:
            return await self._sign_pool(
                csr_pem, request, checked, now, request_key=request_key, created=created
            )
        return await self._sign_one(
            csr_pem, request, checked, now, request_key=request_key, created=created
        )

    async def _sign_pool(
        self,
        csr_pem: bytes,
        request: IssuanceRequest,
        checked: CheckedIssuer,
        now: dt.datetime,
        *,
        request_key: str | None,
        created: dt.datetime | None,
    ) -> Outcome:
        """Sign with one pool member: the members in the order :func:`core.pool.order_members`
        gives, until one signs. A member whose vault fails (unreachable, throttled,
        forbidden; or a fault of that member alone) is set aside (its breaker opens) and
        the request goes on to the next at once, so no request fails while one member
        works. A vault that is unreachable (refused, reset, 502/503/504, no answer) is
        not retried by the keyvault layer first: its first failure sets the member
        aside, and a request that took the member before that but has not sent its sign
        yet skips it (the gateway asks the breaker right before each request), so the
        others do not each find the outage. Only the certificate of the member that
        answered is ever delivered: a member whose answer was lost (a timeout, a reset
        after sending) signed a certificate nobody received -- redoing a sign elsewhere
        costs a signature, never a second certificate for the request, as its status
        records the one certificate it is given."""
        pool = checked.spec.pool
        retry_after = pool.retry_after.total_seconds() if pool is not None else 30.0
        health = self._kv.pool_health
        members = {m.ref: m for m in checked.members}
        refs = list(members)
        order = order_members(
            refs, request_key or "", health, self._kv.budget_view(), self._kv.monotonic()
        )
        probes = {ref for ref in order if health.breaker(ref).probing}
        if not order:
            wait = soonest_retry(refs, health, self._kv.monotonic())
            return Transient(
                f"every member of the pool of {checked.key} is set aside after its vault "
                f"failed; the first is probed again in {wait:.0f}s",
                wait or None,
            )
        last: Transient | None = None
        deferred: Transient | None = None
        try:
            for ref in order:
                probes.discard(ref)
                member = members[ref]
                outcome = await self._sign_one(
                    csr_pem,
                    request,
                    member.checked,
                    now,
                    request_key=request_key,
                    created=created,
                    member=ref,
                )
                if isinstance(outcome, Signed):
                    if health.succeeded(ref):
                        log.info("pool member %r of %s signs again", ref.name, checked.key)
                        self._member_changed(checked.key)
                    return outcome
                if isinstance(outcome, RequestRefused):
                    # The request's own fault: no other member would sign it.
                    health.release_probe(ref)
                    return outcome
                if isinstance(outcome, Transient) and outcome.set_aside:
                    # Another request found the member failing since this one chose it:
                    # nothing was sent, the breaker is open already.
                    if last is None:
                        last = Transient(
                            f"pool member {ref.name!r} is set aside after its vault failed",
                            outcome.retry_after,
                        )
                    continue
                if isinstance(outcome, Transient) and outcome.deferred:
                    # The member's vault has enough of this issuer's calls waiting for
                    # its throttling budget: no failure of the vault; the next member
                    # may have budget, else the request comes back when the soonest has.
                    health.release_probe(ref)
                    if deferred is None or (outcome.retry_after or 0) < (deferred.retry_after or 0):
                        deferred = outcome
                    continue
                if isinstance(outcome, Transient):
                    reason = str(
                        IssuerReason.THROTTLED
                        if outcome.throttled
                        else IssuerReason.KEY_VAULT_UNREACHABLE
                    )
                    message, vault_retry = outcome.message, outcome.retry_after
                else:
                    reason, message = str(outcome.failure.reason), outcome.failure.message
                    vault_retry = outcome.failure.retry_after
                text = f"pool member {ref.name!r}: {message}"
                if health.failed(
                    ref,
                    self._kv.monotonic(),
                    retry_after=retry_after,
                    vault_retry_after=vault_retry,
                    reason=reason,
                    message=text,
                    throttled=reason == IssuerReason.THROTTLED,
                ):
                    log.warning("%s: set aside, requests go to the other members", text)
                    self._member_changed(checked.key)
                last = Transient(text, vault_retry)
        finally:
            for ref in probes:
                health.release_probe(ref)
        if deferred is not None:
            return deferred
        assert last is not None
        return last

    async def _sign_one(
        self,
        csr_pem: bytes,
        request: IssuanceRequest,
        checked: CheckedIssuer,
        now: dt.datetime,
        *,
        request_key: str | None,
        created: dt.datetime | None,
        member: MemberRef | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        kept = self._kept.pop(request_key, None) if request_key else None
        try:
            if kept is not None and kept.fits(csr_pem, request, checked):
                plan = kept.plan
            else:
                csr = parse_csr(csr_pem)
                at, serial = now, None
                if request_key:
                    step = NOW_PLAN_STEP if request.not_before_now else PLAN_STEP
                    at = plan_time(created, now, checked.ca_cert, step)
                    serial = request_serial(request_key, csr_pem, request, checked, at)
                plan = build_certificate(
                    csr, request, checked.ca_cert, checked.profile, at, serial_number=serial
                )
        except CSRError as err:
            return RequestRefused("InvalidCSR", err.reason)
        except PolicyError as err:
            return RequestRefused("PolicyViolation", err.reason)
        except CAError as err:
            # The CA was valid at the issuer check and is not now (it expired,
            # or its clock-skewed NotBefore is still ahead): not the request's
            # fault. The issuer goes not Ready with the CA's own reason.
            return IssuerFault(ca_failure(err, checked.spec.ca_description), recheck_now=True)

        signer = self._kv.issuer_signer(checked, member=member)
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
            self._keep(request_key, csr_pem, request, checked, plan)
            return Transient(
                keyvault_failure_text(err),
                err.retry_after,
                throttled=err.kind is ErrorKind.THROTTLED,
                deferred=err.code == BUDGET_SPENT,
                set_aside=err.code == MEMBER_SET_ASIDE,
            )
        except SignatureError as err:
            return IssuerFault(CheckFailed(IssuerReason.CA_KEY_MISMATCH, err.reason))
        except AlgorithmError as err:
            return IssuerFault(CheckFailed(IssuerReason.KEY_NOT_USABLE, err.reason))
        except (TimeoutError, OSError) as err:
            self._keep(request_key, csr_pem, request, checked, plan)
            return Transient(f"{type(err).__name__}: {err}", None)
        self._metrics.sign_seconds.labels(*checked.key.labels).observe(
            time.perf_counter() - started
        )
        # sign_certificate verified the signature with the CA key; the chain's
        # order is worked out once per chain.
        cert_pem, ca_pem = checked.ca.split(certificate)
        return Signed(cert_pem, ca_pem, checked.key, certificate, checked.audit_ca)

    def _keep(
        self,
        request_key: str | None,
        csr_pem: bytes,
        request: IssuanceRequest,
        checked: CheckedIssuer,
        plan: CertificatePlan,
    ) -> None:
        if request_key:
            self._kept[request_key] = _KeptPlan(
                csr_pem, request, checked.key_info.kid, checked.ca_cert, plan
            )


@dataclass(frozen=True, slots=True)
class _KeptPlan:
    """A certificate plan whose sign failed transiently, for the request's retry."""

    csr_pem: bytes
    request: IssuanceRequest
    kid: str
    ca_cert: x509.Certificate
    plan: CertificatePlan

    def fits(self, csr_pem: bytes, request: IssuanceRequest, checked: CheckedIssuer) -> bool:
        """Still the same request, key version and CA (a rotation makes a new plan)."""
        return (
            self.csr_pem == csr_pem
            and self.request == request
            and self.kid == checked.key_info.kid
            and self.ca_cert == checked.ca_cert
        )
