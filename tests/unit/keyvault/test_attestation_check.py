"""What the controller checks of a Managed HSM key attestation, by itself (without the
HSM vendor's roots): the key version, its public key, not exportable, no release
policy, the statements present, the certificate file readable; and the summary a
user compares with Microsoft's validator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_issuer.keyvault import KeyInfo
from akv_issuer.keyvault.attestation import (
    AttestationError,
    KeyAttestation,
    check_attestation,
)

KID = "https://hsm.managedhsm.azure.net/keys/ca-key/0123abcd"


def _certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: str | None = None) -> bytes:
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def key() -> KeyInfo:
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyInfo(
        vault_url="https://hsm.managedhsm.azure.net",
        name="ca-key",
        version="0123abcd",
        kid=KID,
        kty="EC-HSM",
        public_key=private.public_key(),
        enabled=True,
        key_ops=("sign",),
    )


@pytest.fixture(scope="module")
def attested(key: KeyInfo) -> KeyAttestation:
    signer = ec.generate_private_key(ec.SECP256R1())
    pem_file = _certificate("partition", signer, issuer="vendor root") + _certificate(
        "vendor root", signer
    )
    return KeyAttestation(
        kid=KID,
        public_key=key.public_key,
        exportable=False,
        has_release_policy=False,
        hsm_platform="2",
        version="1.0.0",
        certificate_pem_file=pem_file,
        private_key_attestation=b"private statement",
        public_key_attestation=b"public statement",
    )


def test_a_matching_attestation_is_summarised(key: KeyInfo, attested: KeyAttestation) -> None:
    summary = check_attestation(attested, kid=key.kid, public_key=key.public_key)
    assert summary.key_id == KID
    assert summary.format_version == "1.0.0"
    assert summary.hsm_platform == "2"
    assert (
        summary.private_key_attestation_sha256 == hashlib.sha256(b"private statement").hexdigest()
    )
    assert summary.public_key_attestation_sha256 == hashlib.sha256(b"public statement").hexdigest()
    assert summary.certificates == 2
    # Only the self-signed certificate is a root; its fingerprint is what a user compares.
    (root,) = summary.roots
    assert root.subject == "CN=vendor root"
    root_cert = x509.load_pem_x509_certificates(attested.certificate_pem_file)[1]
    assert root.sha256 == root_cert.fingerprint(hashes.SHA256()).hex()


def test_the_key_name_compares_without_case_the_version_exactly(
    key: KeyInfo, attested: KeyAttestation
) -> None:
    upper = dataclasses.replace(attested, kid=KID.replace("ca-key", "CA-KEY"))
    assert check_attestation(upper, kid=key.kid, public_key=key.public_key).key_id == upper.kid
    other_version = dataclasses.replace(attested, kid=KID.replace("0123abcd", "0123ABCD"))
    with pytest.raises(AttestationError, match="not for"):
        check_attestation(other_version, kid=key.kid, public_key=key.public_key)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kid": KID.replace("ca-key", "other-key")}, "the attestation is for .*other-key"),
        ({"kid": KID.rsplit("/", 1)[0] + "/ffff"}, "not for " + KID),
        ({"kid": ""}, "for no key"),
        ({"public_key": None}, "attested public key is not the key's"),
        ({"exportable": True}, "says the key is exportable"),
        ({"has_release_policy": True}, "has a release policy"),
        ({"private_key_attestation": b""}, "no private-key attestation"),
        ({"public_key_attestation": b""}, "no public-key attestation"),
        ({"certificate_pem_file": b"not a certificate"}, "holds no certificate"),
    ],
)
def test_what_the_attestation_must_show(
    key: KeyInfo, attested: KeyAttestation, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(AttestationError, match=reason) as caught:
        check_attestation(
            dataclasses.replace(attested, **change), kid=key.kid, public_key=key.public_key
        )  # type: ignore[arg-type]
    assert "\n" not in caught.value.reason


def test_another_keys_public_key_is_refused(key: KeyInfo, attested: KeyAttestation) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(AttestationError, match="public key"):
        check_attestation(
            dataclasses.replace(attested, public_key=other), kid=key.kid, public_key=key.public_key
        )
