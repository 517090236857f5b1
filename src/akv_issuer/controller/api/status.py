"""The ``status`` object of an Issuer / ClusterIssuer, in the CRD's shape.

Written with server-side apply, so fields left out are dropped: the builder
omits what no longer holds instead of writing empty values.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509

from akv_issuer.controller.api.conditions import format_time
from akv_issuer.controller.api.objects import ConditionFields, IssuerStatus


def build_issuer_status(
    *,
    conditions: Sequence[ConditionFields],
    ca_certificate_pem: bytes | None = None,
    key_id: str | None = None,
    key_version: str | None = None,
    signature_algorithm: str | None = None,
    ca_not_after: datetime | None = None,
    last_check_time: datetime | None = None,
    key_attestation: Mapping[str, Any] | None = None,
    members: Sequence[Mapping[str, Any]] | None = None,
) -> IssuerStatus:
    """The ``status`` object of an Issuer / ClusterIssuer, in the CRD's shape.

    Fields left None are omitted, so a server-side apply with this body drops
    values that no longer hold (e.g. the CA after the secret vanished).
    """
    status: IssuerStatus = {"conditions": [c.copy() for c in conditions]}
    if ca_certificate_pem is not None:
        # format: byte -- the Go version stored []byte, i.e. base64 of the PEM.
        status["caCertificate"] = base64.b64encode(ca_certificate_pem).decode("ascii")
    if key_id is not None:
        status["keyID"] = key_id
    if key_version is not None:
        status["keyVersion"] = key_version
    if signature_algorithm is not None:
        status["signatureAlgorithm"] = signature_algorithm
    if ca_not_after is not None:
        status["caNotAfter"] = format_time(ca_not_after)
    if last_check_time is not None:
        status["lastCheckTime"] = format_time(last_check_time)
    if key_attestation is not None:
        # Managed HSM: the attestation as checked (STATUS_FIELDS "keyAttestation.*").
        status["keyAttestation"] = dict(key_attestation)
    if members is not None:
        # spec.pool: each member's state (STATUS_FIELDS "members.*").
        status["members"] = [dict(member) for member in members]
    return status


def first_certificate(encoded: object) -> x509.Certificate | None:
    """The first certificate of a base64 PEM status field (``caCertificate`` of an
    issuer, ``certificate`` of a CertificateRequest); None when empty or unreadable."""
    if not encoded or not isinstance(encoded, str):
        return None
    try:
        return x509.load_pem_x509_certificates(base64.b64decode(encoded))[0]
    except ValueError:
        return None
