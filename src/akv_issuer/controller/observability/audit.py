"""Audit records: one structured log record per certificate issued, request
refused and certificate revoked.

Why: a CA must be able to answer "who got a certificate for this name, and
when" long after the CertificateRequest or Kubernetes CSR is gone (cert-manager
deletes old CertificateRequests, Kubernetes garbage-collects CSRs after a day).
Events expire after an hour and the ``... issued by ...`` log line held no
serial, names or requester. These records carry what a certificate audit
needs, from the certificate itself (serial, subject, SANs, validity), the CA
(Key Vault key ID and version) and the request as the API server stored it
(kind, namespace, name, UID and the requester the API server recorded in
``spec.username`` / ``spec.uid`` / ``spec.groups`` -- set by the API server
from the creator's authenticated identity, not by the client).

Why a log record and not an object in the cluster: logs leave the cluster
(Container Insights, any log shipper) and outlive it, and writing a record
costs the issuance path nothing. They go to their own logger,
``akv_issuer.audit`` (kept at INFO whatever ``--log-level`` says), so they can
be filtered or routed apart from the operational log; with ``--log-format
json`` each record is one JSON line whose ``audit`` member holds the fields.

Built here only, for every request kind (through the request flow) and for
revocations (the revoker). What never goes into a record: tokens, secrets,
private keys, the CSR or certificate bodies, and ``spec.extra`` of the
requester (it can hold credential identifiers such as a token's ID).

A record is written after the status write it describes has succeeded, so a
record means the API server holds the result. A process killed between that
write and the log line loses the record (the certificate is in the request's
status and, for revocations, in the issuer's revocation ConfigMap).
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from cryptography import x509

from akv_issuer.pki import CSR_PARSE_ERRORS

AUDIT_LOGGER: Final = "akv_issuer.audit"
log = logging.getLogger(AUDIT_LOGGER)

__all__ = [
    "AUDIT_LOGGER",
    "CAKey",
    "Event",
    "IssuerRef",
    "RequestRef",
    "Requester",
    "certificate_fields",
    "emit",
    "issued",
    "refused",
    "requested_fields",
    "requester_of",
    "revoked",
    "subject_text",
]


class Event(StrEnum):
    ISSUED = "issued"
    REFUSED = "refused"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who created the request, as the API server recorded it in its spec."""

    username: str
    uid: str
    groups: tuple[str, ...]
    # A PodCertificateRequest's: the Pod, its ServiceAccount and node (the
    # kubelet of that node created it; the node authorizer lets it do so only
    # for Pods bound to it).
    pod: PodRef | None = None

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
        }
        if self.pod is not None:
            fields["pod"] = self.pod.fields()
        return fields


@dataclass(frozen=True, slots=True)
class PodRef:
    """The Pod a PodCertificateRequest is for, as its spec names it."""

    namespace: str
    name: str
    uid: str
    service_account: str
    service_account_uid: str
    node: str
    node_uid: str

    def fields(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "serviceAccountName": self.service_account,
            "serviceAccountUID": self.service_account_uid,
            "nodeName": self.node,
            "nodeUID": self.node_uid,
        }


def requester_of(obj: Mapping[str, Any]) -> Requester:
    """``spec.username`` / ``spec.uid`` / ``spec.groups``: the same fields in a
    CertificateRequest and a Kubernetes CSR, filled in by the API server (a
    CertificateRequest's by cert-manager's webhook from the admission request's
    user info; a CSR's by the API server itself)."""
    spec = obj.get("spec") or {}
    groups = spec.get("groups") or ()
    return Requester(
        username=str(spec.get("username") or ""),
        uid=str(spec.get("uid") or ""),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list | tuple) else (),
    )


class IssuerRef(Protocol):
    """The issuer a record is about (an ``IssuerKey``)."""

    @property
    def kind(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RequestRef:
    kind: str  # CertificateRequest, CertificateSigningRequest
    namespace: str  # "" for a cluster-scoped Kubernetes CSR
    name: str
    uid: str

    @classmethod
    def of(cls, kind: str, obj: Mapping[str, Any]) -> RequestRef:
        meta = obj.get("metadata") or {}
        return cls(
            kind=kind,
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
        )

    def fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid}


def subject_text(name: x509.Name) -> str:
    """A name as RFC 4514 text, or ``<undecodable>`` for one that does not decode."""
    try:
        return name.rfc4514_string()
    except ValueError:  # an attribute that does not decode: say so rather than fail
        return "<undecodable>"


@dataclass(frozen=True, slots=True)
class CAKey:
    """The CA a certificate was (or would have been) signed with."""

    key_id: str  # Key Vault's kid: https://<vault>/keys/<name>/<version>
    key_name: str
    key_version: str
    ca_subject: str
    # Whether the key can leave Key Vault, and its Managed HSM attestation as the
    # issuer check found them (docs/audit.md, ``ca.key_protection``).
    key_protection: Mapping[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "key_id": self.key_id,
            "key_name": self.key_name,
            "key_version": self.key_version,
            "subject": self.ca_subject,
        }
        if self.key_protection is not None:
            fields["key_protection"] = dict(self.key_protection)
        return fields


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sans(extensions: x509.Extensions) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"dns": [], "ip": [], "email": [], "uri": []}
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return found
    for general in san:
        if isinstance(general, x509.DNSName):
            found["dns"].append(general.value)
        elif isinstance(general, x509.IPAddress):
            found["ip"].append(str(general.value))
        elif isinstance(general, x509.RFC822Name):
            found["email"].append(general.value)
        elif isinstance(general, x509.UniformResourceIdentifier):
            found["uri"].append(general.value)
    return found


def certificate_fields(cert: x509.Certificate) -> dict[str, Any]:
    """Serial (lower-case hex, as in the revocation annotation and the CRL
    tooling), subject, SANs, validity and whether it is a CA."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return {
        "serial": f"{cert.serial_number:x}",
        "subject": subject_text(cert.subject),
        "sans": _sans(cert.extensions),
        "not_before": _time(cert.not_valid_before_utc),
        "not_after": _time(cert.not_valid_after_utc),
        "is_ca": is_ca,
    }


def requested_fields(csr_pem: bytes | None) -> dict[str, Any] | None:
    """What a CSR asked for (subject, SANs), or None when it does not parse.

    Deliberately lenient (no key or signature checks): a CSR refused for its
    key size still names what it wanted, and that is worth recording."""
    if not csr_pem:
        return None
    try:
        # A refused CSR may be anything: no traceback, no warning on stderr
        # (cryptography warns of an empty or over-long commonName).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            csr = x509.load_pem_x509_csr(csr_pem)
            return {"subject": subject_text(csr.subject), "sans": _sans(csr.extensions)}
    except (*CSR_PARSE_ERRORS, TypeError):
        return None


def _common(
    event: Event,
    at: dt.datetime,
    request: RequestRef,
    requester: Requester,
    issuer: IssuerRef | None,
    ca: CAKey | None,
) -> dict[str, Any]:
    return {
        "event": str(event),
        "time": _time(at),
        "issuer": (
            {"kind": issuer.kind, "namespace": issuer.namespace, "name": issuer.name}
            if issuer is not None
            else None
        ),
        "ca": ca.fields() if ca is not None else None,
        "request": request.fields(),
        "requester": requester.fields(),
    }


def issued(
    *,
    request: RequestRef,
    requester: Requester,
    issuer: IssuerRef,
    certificate: x509.Certificate,
    ca: CAKey,
    at: dt.datetime,
) -> dict[str, Any]:
    return {
        **_common(Event.ISSUED, at, request, requester, issuer, ca),
        **certificate_fields(certificate),
    }


def refused(
    *,
    request: RequestRef,
    requester: Requester,
    issuer: IssuerRef | None,
    reason: str,
    message: str,
    csr_pem: bytes | None,
    ca: CAKey | None,
    at: dt.datetime,
) -> dict[str, Any]:
    """A request that ended without a certificate: ``reason`` is the request's
    (InvalidCSR, PolicyViolation, InvalidRequest, RetryBudgetExhausted, Denied;
    DeniedReference for a Kubernetes CSR whose requester may not use the Issuer)."""
    return {
        **_common(Event.REFUSED, at, request, requester, issuer, ca),
        "reason": reason,
        "message": message,
        "requested": requested_fields(csr_pem),
    }


def revoked(
    *,
    request: RequestRef,
    requester: Requester,
    issuer: IssuerRef,
    certificate: x509.Certificate,
    ca: CAKey,
    reason: str,
    revoked_at: dt.datetime,
    recorded_in: str,
    at: dt.datetime,
) -> dict[str, Any]:
    """``requester`` is who requested the certificate; who asked for the
    revocation (annotated the request) is in the API server's audit log."""
    return {
        **_common(Event.REVOKED, at, request, requester, issuer, ca),
        **certificate_fields(certificate),
        "revocation": {
            "reason": reason,
            "revoked_at": _time(revoked_at),
            "recorded_in": recorded_in,
        },
    }


def _summary(record: Mapping[str, Any]) -> str:
    request = record["request"]
    where = f"{request['namespace']}/{request['name']}" if request["namespace"] else request["name"]
    who = record["requester"]["username"] or "<unknown>"
    what = f"serial {record['serial']}" if "serial" in record else f"reason {record['reason']}"
    return f"certificate {record['event']}: {what}, {request['kind']} {where}, requester {who}"


def emit(record: dict[str, Any]) -> None:
    """One record on the audit logger: a one-line summary as the message, the
    fields under ``audit`` (a JSON object with ``--log-format json``)."""
    log.info("%s", _summary(record), extra={"audit": record})
