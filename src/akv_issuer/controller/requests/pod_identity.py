"""What the certificate for a PodCertificateRequest holds, derived from the
request and the issuer's ``spec.podCertificates``: the key type the API names,
the stub CSR's public key, the lifetime, the identity (SANs) and when the
kubelet should start refreshing.

Pure functions, apart from the request kind (:mod:`.podcertificaterequest`,
the API's object and status) and the admission policy (:mod:`.pod_admission`,
which refuses what these cannot make), because both use them: admission checks
that a certificate can be made before anything is signed, and the kind makes
exactly that certificate. The identity comes from the policy and the
request's spec (which the API server and the kubelet fill in), never from the
CSR, which only carries (and proves possession of) the public key.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from akv_issuer.controller.api import POD_MAX_LIFETIME, POD_MIN_LIFETIME, PodCertificatesSpec
from akv_issuer.controller.api.objects import PodCertificateRequestObject

# beginRefreshAt: two thirds into the lifetime, and as the API requires at
# least 10 minutes after NotBefore and before NotAfter.
REFRESH_FRACTION: Final = 2 / 3
REFRESH_MARGIN: Final = dt.timedelta(minutes=10)

_DNS_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


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
