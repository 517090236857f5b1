"""Which Certificates re-issuing after a CA change looks at (pure parts)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.controller.api import GROUP
from akv_issuer.controller.ca_lifecycle.reissue import Progress, addresses, current_leaf
from akv_issuer.controller.core import IssuerKey

ISSUER = IssuerKey("Issuer", "team-a", "ca")
CLUSTER = IssuerKey("ClusterIssuer", "", "root")


def certificate(namespace: str = "team-a", **ref: str) -> dict[str, Any]:
    issuer_ref = {"name": "ca", "kind": "Issuer", "group": GROUP, **ref}
    return {
        "metadata": {"name": "c", "namespace": namespace, "uid": "cert-uid"},
        "spec": {"issuerRef": issuer_ref},
        "status": {"revision": 2},
    }


@pytest.mark.parametrize(
    ("obj", "key", "expected"),
    [
        (certificate(), ISSUER, True),
        (certificate(kind=""), ISSUER, True),  # empty kind means Issuer
        (certificate(namespace="team-b"), ISSUER, False),  # an Issuer serves its namespace only
        (certificate(group="cert-manager.io"), ISSUER, False),
        (certificate(name="other"), ISSUER, False),
        (certificate(kind="ClusterIssuer", name="root", namespace="any"), CLUSTER, True),
        (certificate(kind="ClusterIssuer", name="root"), ISSUER, False),
    ],
)
def test_addresses(obj: dict[str, Any], key: IssuerKey, expected: bool) -> None:
    assert addresses(obj, key) is expected


def _leaf_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "leaf")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def request(revision: str, owner: str = "cert-uid", pem: bytes | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "ownerReferences": [{"uid": owner}],
            "annotations": {"cert-manager.io/certificate-revision": revision},
        },
        "status": {"certificate": base64.b64encode(pem).decode()} if pem else {},
    }


def test_current_leaf_is_the_one_of_the_current_revision() -> None:
    pem = _leaf_pem()
    requests = [request("1", pem=_leaf_pem()), request("2", pem=pem), request("2", owner="x")]
    leaf = current_leaf(certificate(), requests)
    assert leaf is not None
    assert leaf.public_bytes(serialization.Encoding.PEM) == pem


def test_no_current_leaf_when_its_request_is_gone_or_unsigned() -> None:
    assert current_leaf(certificate(), [request("1", pem=_leaf_pem())]) is None
    assert current_leaf(certificate(), [request("2")]) is None


def test_progress_is_described() -> None:
    progress = Progress(ca_serial=1, total=5, stale=3, triggered=1)
    assert progress.remaining == 2
    assert progress.describe().startswith("re-issuing Certificates of a previous CA: 1 of 3")
    progress.done = True
    assert "none is left on a previous CA" in progress.describe()
