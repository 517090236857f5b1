"""The admission policy of PodCertificateRequests: nothing approves them, the
issuer's ``spec.podCertificates`` is the approval, checked by :func:`admit`
against the issuer as it is right before signing.

An issuer without that section, a Pod whose namespace (``namespaceSelector``,
a Kubernetes label selector on the namespace's labels, read with a ``get`` at
each request) or ServiceAccount it does not allow, unverifiedUserAnnotations
(this signer defines none), a key type it does not allow, or an identity its
templates cannot be filled with end the request ``Denied`` with a reason that
says which; a request the API should not have let through (no lifetime, no
readable stub CSR) ends ``Failed``.

Apart from the request kind (:mod:`.podcertificaterequest`: the API's object,
signer names and status writes) because this is the security decision, read
and reviewed on its own; the reasons are the contract with users (events,
conditions, docs/pod-certificates.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from lightkube import ApiError

from akv_issuer.controller.api import NAMESPACES, PodCertificatesSpec
from akv_issuer.controller.api.label_selector import describe_selector, selector_matches
from akv_issuer.controller.api.objects import PodCertificateRequestObject
from akv_issuer.controller.core import CheckedIssuer, IssuerKey
from akv_issuer.controller.requests.kind import Denied, Failed
from akv_issuer.controller.requests.pod_identity import (
    IdentityError,
    identity,
    key_type,
    lifetime,
    stub_csr,
)
from akv_issuer.runtime.kubeapi import KubeApi

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


async def admit(
    api: KubeApi, obj: PodCertificateRequestObject, issuer: CheckedIssuer
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
        refused = await _namespace_refused(api, namespace, key, policy)
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
    api: KubeApi, namespace: str, key: IssuerKey, policy: PodCertificatesSpec
) -> Denied | None:
    try:
        found = await api.get(NAMESPACES, namespace)
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
