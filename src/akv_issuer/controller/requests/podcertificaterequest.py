"""Kubernetes PodCertificateRequests (``certificates.k8s.io/v1``, 1.37) signed by our issuers.

A Pod asks for a certificate through a ``podCertificate`` projected volume;
its node's kubelet makes the key and creates a PodCertificateRequest in the
Pod's namespace naming the signer, the Pod, its ServiceAccount and node, and
a stub PKCS#10 request that only carries (and proves possession of) the
public key. The signer names are those of our Kubernetes CSRs:
``clusterissuers.<group>/<name>`` for a ClusterIssuer,
``issuers.<group>/<namespace>.<name>`` for an Issuer, which signs only for
Pods of its own namespace.

Nothing approves a PodCertificateRequest: the issuer's ``spec.podCertificates``
is the approval (:meth:`PodCertificateRequests.admit`, checked against the
issuer as it is right before signing). An issuer without that section, a Pod
whose namespace or ServiceAccount it does not allow, a key type it does not
allow, or unverifiedUserAnnotations (this signer defines none) end the
request ``Denied`` with a reason that says which. The identity written into
the certificate comes from the policy and the request's spec (which the API
server and the kubelet fill in), never from the CSR: an empty subject, a
SPIFFE URI ``spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>``
and/or DNS names from the policy's templates.

The API's rules (certificates/v1 validation): the status is immutable but for
the one transition to a terminal condition (``Issued``, ``Denied`` or
``Failed``, status True, at most one); so waiting is said in events only, and
a request whose issuer stays missing or not Ready for :data:`WAIT_LIMIT` ends
``Failed``. An Issued status holds ``certificateChain`` (the leaf first, then
intermediates below the root: trust anchors are published apart),
``notBefore``/``notAfter`` equal to the leaf's, NotBefore within 5 minutes of
the API server's clock, a lifetime of at least 1 h and at most
``spec.maxExpirationSeconds``, and ``beginRefreshAt`` at least 10 minutes
after NotBefore and before NotAfter. ``beginRefreshAt`` is two thirds into
the lifetime, or where the policy's ``refreshBeforePercentage`` puts it.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any, Final, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from lightkube import ApiError

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    ISSUER_KIND,
    NAMESPACES,
    POD_CERTIFICATE_REQUESTS,
    POD_KEY_TYPES,
    POD_MAX_LIFETIME,
    POD_MIN_LIFETIME,
    PodCertificatesSpec,
    conditions_of,
    find_condition,
    format_time,
)
from akv_issuer.controller.api.label_selector import describe_selector, selector_matches
from akv_issuer.controller.api.objects import (
    ConditionFields,
    HasMetadata,
    PodCertificateRequestObject,
    PodCertificateRequestStatus,
    typed,
)
from akv_issuer.controller.core import CheckedIssuer, IssuerKey
from akv_issuer.controller.observability.audit import PodRef, Requester
from akv_issuer.controller.requests.decide import Refuse, RequestView
from akv_issuer.controller.requests.kind import (
    Denied,
    Failed,
    Issued,
    RequestConflict,
    StatusUpdate,
)
from akv_issuer.controller.requests.kubecsr import SignerNameError, issuer_of_signer
from akv_issuer.pki import IssuanceRequest
from akv_issuer.runtime.kubeapi import MERGE_PATCH, ApiResource, KubeApi

# The API's condition types; each is terminal, with status True.
ISSUED: Final = "Issued"
DENIED: Final = "Denied"
FAILED: Final = "Failed"
TERMINAL: Final = (ISSUED, DENIED, FAILED)

# Reasons. The API names two (for Denied); the others are ours, one per
# thing a user would change.
REASON_UNSUPPORTED_KEY_TYPE: Final = "UnsupportedKeyType"
REASON_INVALID_USER_ANNOTATIONS: Final = "InvalidUnverifiedUserAnnotations"
REASON_NOT_ENABLED: Final = "PodCertificatesNotEnabled"
REASON_NAMESPACE_NOT_ALLOWED: Final = "NamespaceNotAllowed"
REASON_SERVICE_ACCOUNT_NOT_ALLOWED: Final = "ServiceAccountNotAllowed"
REASON_ISSUER_IN_ANOTHER_NAMESPACE: Final = "IssuerInAnotherNamespace"
REASON_INVALID_IDENTITY: Final = "InvalidIdentity"
REASON_INVALID_REQUEST: Final = "InvalidRequest"

# How long a request waits for a missing or not-Ready issuer before it ends
# Failed (its status cannot say Pending; the kubelet shows the Failed reason
# as an event on the Pod, which then has to be re-created).
WAIT_LIMIT: Final = dt.timedelta(minutes=5)
# beginRefreshAt: two thirds into the lifetime, and as the API requires at
# least 10 minutes after NotBefore and before NotAfter.
REFRESH_FRACTION: Final = 2 / 3
REFRESH_MARGIN: Final = dt.timedelta(minutes=10)

_DNS_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class _Metadata(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str


class _Spec(TypedDict, total=False):
    signerName: str


class _Status(TypedDict, total=False):
    conditions: list[ConditionFields]


class PCRFields(TypedDict, total=False):
    """What the informer decodes of each PodCertificateRequest: what
    :func:`view` reads (the flow keeps whole the few it works on)."""

    metadata: _Metadata
    spec: _Spec
    status: _Status


def key_type(public_key: object) -> str | None:
    """The API's name of a public key's type (``ECDSAP256`` ...), None for one
    the API does not allow."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return {3072: "RSA3072", 4096: "RSA4096"}.get(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSAP256", "secp384r1": "ECDSAP384", "secp521r1": "ECDSAP521"}.get(
            public_key.curve.name
        )
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ED25519"
    return None


def _finished(obj: PodCertificateRequestObject) -> bool:
    conditions = conditions_of(obj)
    return any(
        (found := find_condition(conditions, type_)) is not None and found.status == "True"
        for type_ in TERMINAL
    )


def view(obj: PodCertificateRequestObject) -> RequestView:
    """The request view of a PodCertificateRequest: addressed to one of our
    issuers by its signerName, approved from the start (the issuer's policy
    decides, see :meth:`PodCertificateRequests.admit`)."""
    meta = obj.get("metadata") or {}
    signer = str((obj.get("spec") or {}).get("signerName") or "")
    namespace = str(meta.get("namespace") or "")
    refusal: Refuse | None = None
    try:
        issuer = issuer_of_signer(signer, GROUP)
    except SignerNameError as err:
        # Ours to answer, never to ignore; the key names no issuer that can exist.
        issuer = IssuerKey(CLUSTER_ISSUER_KIND, "", signer)
        refusal = Refuse(REASON_INVALID_REQUEST, str(err), denied=False)
    if issuer is None and _under_our_domain(signer):
        issuer = IssuerKey(CLUSTER_ISSUER_KIND, "", signer)
        refusal = Refuse(
            REASON_INVALID_REQUEST,
            f"signerName {signer!r} is under {GROUP} but names no issuer: use "
            f"clusterissuers.{GROUP}/<name> or issuers.{GROUP}/<namespace>.<name>",
            denied=False,
        )
    if issuer is not None and issuer.kind == ISSUER_KIND and issuer.namespace != namespace:
        refusal = Refuse(
            REASON_ISSUER_IN_ANOTHER_NAMESPACE,
            f"Issuer {issuer.namespace}/{issuer.name} signs only for Pods in namespace "
            f"{issuer.namespace}, this Pod is in {namespace}; use an Issuer of namespace "
            f"{namespace} (signerName issuers.{GROUP}/{namespace}.<name>) or a ClusterIssuer",
            denied=True,
        )
    return RequestView.read(
        obj, issuer=issuer, finished=_finished(obj), approved=True, refusal=refusal
    )


def _under_our_domain(signer: str) -> bool:
    """A signer name whose domain is our group or below it: ours to answer."""
    domain = signer.partition("/")[0]
    return domain == GROUP or domain.endswith(f".{GROUP}")


def stub_csr(obj: PodCertificateRequestObject) -> x509.CertificateSigningRequest:
    """The stub PKCS#10 request (DER, base64 in JSON); ValueError if unreadable."""
    encoded = str((obj.get("spec") or {}).get("stubPKCS10Request") or "")
    if not encoded:
        raise ValueError("spec.stubPKCS10Request is empty")
    try:
        return x509.load_der_x509_csr(base64.b64decode(encoded, validate=True))
    except ValueError as err:
        raise ValueError(f"spec.stubPKCS10Request is not a DER PKCS#10 request: {err}") from None


def lifetime(obj: PodCertificateRequestObject, policy: PodCertificatesSpec) -> dt.timedelta:
    """The certificate's lifetime: ``spec.maxExpirationSeconds`` capped by the
    policy's maxLifetime; ValueError outside the API's bounds."""
    seconds = (obj.get("spec") or {}).get("maxExpirationSeconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise ValueError("spec.maxExpirationSeconds is not set")
    asked = dt.timedelta(seconds=seconds)
    if not POD_MIN_LIFETIME <= asked <= POD_MAX_LIFETIME:
        raise ValueError(
            f"spec.maxExpirationSeconds {seconds} is outside the API's bounds "
            f"({int(POD_MIN_LIFETIME.total_seconds())} to {int(POD_MAX_LIFETIME.total_seconds())})"
        )
    return min(asked, policy.max_lifetime)


class IdentityError(ValueError):
    """The policy's identity cannot be written for this Pod."""


def identity(
    obj: PodCertificateRequestObject, policy: PodCertificatesSpec
) -> tuple[x509.GeneralName, ...]:
    """The subject alternative names of the Pod's certificate: the SPIFFE ID,
    then the DNS names of the policy's templates, filled in from the request's
    spec (Pod name, namespace, ServiceAccount), each value a DNS label so that
    no Pod can make a template name another subtree."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    namespace = str(meta.get("namespace") or "")
    account = str(spec.get("serviceAccountName") or "")
    names: list[x509.GeneralName] = []
    if policy.spiffe_trust_domain:
        names.append(
            x509.UniformResourceIdentifier(
                f"spiffe://{policy.spiffe_trust_domain}/ns/{namespace}/sa/{account}"
            )
        )
    values = {
        "$(POD_NAME)": ("Pod name", str(spec.get("podName") or "")),
        "$(NAMESPACE)": ("namespace", namespace),
        "$(SERVICE_ACCOUNT)": ("ServiceAccount name", account),
    }
    for template in policy.dns_names:
        name = template
        for placeholder, (what, value) in values.items():
            if placeholder not in name:
                continue
            if not value or len(value) > 63 or not set(value) <= _DNS_LABEL_CHARS:
                raise IdentityError(
                    f"the {what} {value!r} is not a DNS label (at most 63 lowercase letters, "
                    f"digits and '-'), so the DNS name template {template!r} of "
                    "spec.podCertificates.dnsNames cannot be filled in"
                )
            name = name.replace(placeholder, value)
        if len(name) > 253:
            raise IdentityError(f"the DNS name {name!r} is longer than 253 characters")
        if x509.DNSName(name) not in names:
            names.append(x509.DNSName(name))
    return tuple(names)


def begin_refresh_at(
    not_before: dt.datetime, not_after: dt.datetime, before_percentage: int | None = None
) -> dt.datetime:
    """When the kubelet should start refreshing: two thirds into the lifetime,
    or when ``before_percentage`` percent of it is left (the policy's
    refreshBeforePercentage), within [NotBefore + 10 min, NotAfter - 10 min]
    as the API requires."""
    fraction = REFRESH_FRACTION if before_percentage is None else 1 - before_percentage / 100
    at = not_before + (not_after - not_before) * fraction
    at = max(min(at, not_after - REFRESH_MARGIN), not_before + REFRESH_MARGIN)
    return at.replace(microsecond=0)


class PodCertificateRequests:
    """The request kind of Kubernetes PodCertificateRequests (``certificates.k8s.io/v1``)."""

    name = "podcertificaterequests"
    object_kind = "PodCertificateRequest"
    resource: ApiResource = POD_CERTIFICATE_REQUESTS
    shape: type = PCRFields
    wait_limit: dt.timedelta | None = WAIT_LIMIT

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        # The policy's refreshBeforePercentage of each request being signed
        # (by uid), from parameters() to the Issued write: the status is
        # written without the issuer at hand. Lost with a restart, like the
        # flow's kept certificate; the default then applies.
        self._refresh_before: dict[str, int] = {}

    def view(self, obj: PodCertificateRequestObject) -> RequestView:
        return view(obj)

    async def admit(
        self, obj: PodCertificateRequestObject, issuer: CheckedIssuer
    ) -> Denied | Failed | None:
        """The issuer's ``spec.podCertificates`` decides, in the order a user
        would fix things: the issuer, the Pod's namespace and ServiceAccount,
        the request's annotations, key and lifetime, the identity."""
        policy = issuer.spec.pod_certificates
        key = issuer.key
        if policy is None:
            return Denied(
                f"{key} does not sign PodCertificateRequests: its spec has no podCertificates "
                "section (see docs/pod-certificates.md)",
                REASON_NOT_ENABLED,
            )
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        namespace = str(meta.get("namespace") or "")
        # None or an empty selector: every namespace, nothing to read.
        if policy.namespace_labels or policy.namespace_expressions:
            refused = await self._namespace_refused(namespace, key, policy)
            if refused is not None:
                return refused
        account = str(spec.get("serviceAccountName") or "")
        if policy.service_accounts is not None and account not in policy.service_accounts:
            return Denied(
                f"ServiceAccount {namespace}/{account} is not in {key}'s "
                f"podCertificates.serviceAccounts ({', '.join(policy.service_accounts) or 'none'})",
                REASON_SERVICE_ACCOUNT_NOT_ALLOWED,
            )
        annotations = spec.get("unverifiedUserAnnotations") or {}
        if annotations:
            return Denied(
                "this signer defines no unverifiedUserAnnotations; remove "
                f"{', '.join(sorted(annotations))} from the Pod's podCertificate volume "
                "(userAnnotations)",
                REASON_INVALID_USER_ANNOTATIONS,
            )
        try:
            csr = stub_csr(obj)
            lifetime(obj, policy)
        except ValueError as err:
            return Failed(REASON_INVALID_REQUEST, str(err), invalid=True)
        found = key_type(csr.public_key())
        allowed = ", ".join(policy.key_types)
        if found is None:
            return Denied(
                f"the key is of a type the PodCertificateRequest API does not allow; "
                f"use one of {allowed}",
                REASON_UNSUPPORTED_KEY_TYPE,
            )
        if found not in policy.key_types:
            return Denied(
                f"key type {found} is not allowed by {key}'s podCertificates.keyTypes; "
                f"set the Pod's podCertificate keyType to one of {allowed}",
                REASON_UNSUPPORTED_KEY_TYPE,
            )
        try:
            identity(obj, policy)
        except IdentityError as err:
            return Denied(str(err), REASON_INVALID_IDENTITY)
        return None

    async def _namespace_refused(
        self, namespace: str, key: IssuerKey, policy: PodCertificatesSpec
    ) -> Denied | None:
        try:
            found = await self._api.get(NAMESPACES, namespace)
        except ApiError as err:
            if err.status.code != 404:
                raise  # retried with the controller's backoff
            labels: Mapping[str, Any] = {}
        else:
            labels = (found.get("metadata") or {}).get("labels") or {}
        match_labels = policy.namespace_labels or ()
        if selector_matches(labels, match_labels, policy.namespace_expressions):
            return None
        return Denied(
            f"namespace {namespace} does not match {key}'s podCertificates.namespaceSelector "
            f"({describe_selector(match_labels, policy.namespace_expressions)})",
            REASON_NAMESPACE_NOT_ALLOWED,
        )

    def parameters(
        self, obj: PodCertificateRequestObject, issuer: CheckedIssuer
    ) -> tuple[str, IssuanceRequest]:
        policy = issuer.spec.pod_certificates
        if policy is None:  # admit() denied it already
            raise ValueError(f"{issuer.key} does not sign PodCertificateRequests")
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if policy.refresh_before_percentage is not None:
            self._refresh_before[uid] = policy.refresh_before_percentage
        else:
            self._refresh_before.pop(uid, None)
        return self.csr(obj), IssuanceRequest(
            duration=lifetime(obj, policy),
            usages=policy.usages,
            names=identity(obj, policy),
            not_before_now=True,
            min_duration=POD_MIN_LIFETIME,
        )

    def csr(self, obj: PodCertificateRequestObject) -> str:
        """The stub CSR as base64 of its PEM, as the flow takes every kind's CSR."""
        try:
            pem = stub_csr(obj).public_bytes(serialization.Encoding.PEM)
        except ValueError:
            return ""
        return base64.b64encode(pem).decode()

    def requester(self, obj: PodCertificateRequestObject) -> Requester:
        # The API server records no creator in a PodCertificateRequest; it is
        # the kubelet of spec.nodeName (the node authorizer lets a kubelet
        # create them only for Pods bound to its node) or an administrator.
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        return Requester(
            username="",
            uid="",
            groups=(),
            pod=PodRef(
                namespace=str(meta.get("namespace") or ""),
                name=str(spec.get("podName") or ""),
                uid=str(spec.get("podUID") or ""),
                service_account=str(spec.get("serviceAccountName") or ""),
                service_account_uid=str(spec.get("serviceAccountUID") or ""),
                node=str(spec.get("nodeName") or ""),
                node_uid=str(spec.get("nodeUID") or ""),
            ),
        )

    def shows(self, obj: PodCertificateRequestObject, update: StatusUpdate) -> bool:
        return False  # nothing is written for Pending (the status cannot say it)

    async def write(
        self, obj: PodCertificateRequestObject, update: StatusUpdate, now: dt.datetime
    ) -> HasMetadata | None:
        moment = format_time(now)
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        status: PodCertificateRequestStatus
        if isinstance(update, Issued):
            leaf = x509.load_pem_x509_certificate(update.certificate_pem)
            not_before = leaf.not_valid_before_utc
            not_after = leaf.not_valid_after_utc
            status = {
                "conditions": [
                    _condition(
                        ISSUED,
                        "Issued",
                        f"Certificate issued (serial {leaf.serial_number:x})",
                        moment,
                    )
                ],
                "certificateChain": update.certificate_pem.decode(),
                "notBefore": format_time(not_before),
                "beginRefreshAt": format_time(
                    begin_refresh_at(not_before, not_after, self._refresh_before.get(uid))
                ),
                "notAfter": format_time(not_after),
            }
        elif isinstance(update, Denied):
            status = {"conditions": [_condition(DENIED, update.reason, update.message, moment)]}
        elif isinstance(update, Failed):
            status = {"conditions": [_condition(FAILED, update.reason, update.message, moment)]}
        else:
            return None  # Pending: the status cannot say it (events do)
        name = str(meta.get("name") or "")
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        try:
            written = await self._api.patch(
                POD_CERTIFICATE_REQUESTS,
                name,
                body,
                namespace=str(meta.get("namespace") or ""),
                subresource="status",
                content_type=MERGE_PATCH,
            )
        except ApiError as err:
            if err.status.code == 409:
                raise RequestConflict(name) from err
            raise
        self._refresh_before.pop(uid, None)  # terminal: nothing more is written
        return typed(written, HasMetadata)


def _condition(type_: str, reason: str, message: str, moment: str) -> ConditionFields:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": moment,
    }


__all__ = [
    "POD_KEY_TYPES",
    "WAIT_LIMIT",
    "PodCertificateRequests",
    "begin_refresh_at",
    "identity",
    "key_type",
    "view",
]
