"""The root CA template and check_ca."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from akv_issuer import pki
from akv_issuer.pki import CAError, CAErrorKind, PolicyError
from support.pki import (
    LocalSigner,
    ca_key,
    make_csr,
    make_root,
    name,
    pem,
    private_key,
    run_openssl,
    sign_locally,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(("kind", "path_length"), [("rsa2048", None), ("p384", 0), ("p521", 2)])
async def test_root_template(kind: str, path_length: int | None, tmp_path: Path) -> None:
    root = await make_root(kind, path_length=path_length, subject="Platform Root CA")
    assert root.subject == root.issuer == name("Platform Root CA")
    assert root.serial_number > 1
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=path_length)
    key_usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.key_cert_sign
    assert key_usage.value.crl_sign
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_encipherment
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca_key(kind).public_key())
    assert aki.key_identifier == ski.digest

    (tmp_path / "root.pem").write_bytes(pem(root))
    verify = run_openssl(
        "verify", "-x509_strict", "-CAfile", tmp_path / "root.pem", tmp_path / "root.pem"
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = run_openssl("x509", "-in", tmp_path / "root.pem", "-text", "-noout")
    assert "CA:TRUE" in text.stdout
    assert "Certificate Sign, CRL Sign" in text.stdout
    pki.check_ca(root, ca_key(kind).public_key(), datetime.datetime.now(datetime.UTC))


def test_root_serials_are_random() -> None:
    key = ca_key("p256").public_key()
    serials = {pki.build_root_ca(key, "A", lifetime=DAY, now=NOW).serial_number for _ in range(20)}
    assert len(serials) == 20


def test_root_with_full_subject() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Root"),
        ]
    )
    plan = pki.build_root_ca(ca_key("p256").public_key(), subject, lifetime=3650 * DAY, now=NOW)
    root = sign_locally(plan.builder, ca_key("p256"))
    assert root.subject == subject
    assert root.not_valid_before_utc == NOW
    assert root.not_valid_after_utc == NOW + 3650 * DAY
    assert (plan.not_before, plan.not_after) == (NOW, NOW + 3650 * DAY)


@pytest.mark.parametrize(
    ("subject", "lifetime", "path_length", "reason"),
    [
        ("", DAY, None, "CA common name must not be empty"),
        (x509.Name([]), DAY, None, "CA subject must not be empty"),
        ("A", datetime.timedelta(0), None, "CA lifetime must be positive, got 0:00:00"),
        ("A", DAY, -1, "path length must not be negative, got -1"),
    ],
)
def test_root_template_refuses_bad_input(
    subject: str | x509.Name, lifetime: datetime.timedelta, path_length: int | None, reason: str
) -> None:
    with pytest.raises(PolicyError) as info:
        pki.build_root_ca(
            ca_key("p256").public_key(),
            subject,
            lifetime=lifetime,
            now=NOW,
            path_length=path_length,
        )
    assert info.value.reason == reason


def _root(kind: str = "p256") -> x509.Certificate:
    key = ca_key(kind)
    plan = pki.build_root_ca(key.public_key(), "Checked CA", lifetime=30 * DAY, now=NOW)
    return sign_locally(plan.builder, key)


def _kind(ca: x509.Certificate, key: object, now: datetime.datetime = NOW) -> CAErrorKind:
    with pytest.raises(CAError) as info:
        pki.check_ca(ca, key, now)  # type: ignore[arg-type]
    assert "\n" not in info.value.reason
    return info.value.kind


def test_check_ca_accepts_a_valid_ca() -> None:
    pki.check_ca(_root(), ca_key("p256").public_key(), NOW + DAY)


def test_check_ca_mismatch() -> None:
    assert _kind(_root(), ca_key("p384").public_key()) is CAErrorKind.MISMATCH
    with pytest.raises(
        CAError, match=r"\(ECDSA P-256\) is not the signing key's public key \(RSA 2048-bit\)"
    ):
        pki.check_ca(_root(), ca_key("rsa2048").public_key(), NOW)


def test_check_ca_validity() -> None:
    root = _root()
    key = ca_key("p256").public_key()
    assert _kind(root, key, NOW - datetime.timedelta(seconds=1)) is CAErrorKind.NOT_YET_VALID
    assert _kind(root, key, NOW + 30 * DAY) is CAErrorKind.EXPIRED
    pki.check_ca(root, key, NOW + 30 * DAY - datetime.timedelta(seconds=1))


def test_check_ca_leaf_is_not_a_ca() -> None:
    root = _root()
    plan = pki.build_certificate(
        make_csr(ca_key("p384")), pki.IssuanceRequest(), root, pki.IssuerProfile(), NOW
    )
    leaf = sign_locally(plan.builder, ca_key("p256"))
    assert _kind(leaf, ca_key("p384").public_key(), NOW) is CAErrorKind.NOT_A_CA


def test_check_ca_without_cert_sign_is_not_a_ca() -> None:
    key = ca_key("p256")
    cert = sign_locally(
        x509.CertificateBuilder()
        .subject_name(name("No certSign"))
        .issuer_name(name("No certSign"))
        .public_key(key.public_key())
        .serial_number(11)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ),
        key,
    )
    with pytest.raises(CAError, match="keyCertSign missing") as info:
        pki.check_ca(cert, key.public_key(), NOW)
    assert info.value.kind is CAErrorKind.NOT_A_CA


def test_check_ca_v1_certificate_is_invalid(tmp_path: Path) -> None:
    key = private_key("p256")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "req.csr").write_bytes(pem(make_csr(key)))
    # Without extensions, `openssl x509 -req` still writes version 1 certificates.
    made = run_openssl(
        "x509", "-req", "-in", tmp_path / "req.csr", "-signkey", key_file, "-days", "2"
    )
    assert made.returncode == 0, made.stderr
    cert = x509.load_pem_x509_certificate(made.stdout.encode())
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(CAError, match=r"not an X\.509 v3 certificate") as info:
        pki.check_ca(cert, key.public_key(), now)
    assert info.value.kind is CAErrorKind.INVALID


def test_chain_expiry_is_the_cas() -> None:
    root = _root()
    chain = pki.load_ca_chain(pem(root), ca_key("p256").public_key(), NOW)
    assert (chain.not_after - NOW).total_seconds() == 30 * 86400
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.load_ca_chain(pem(root), ca_key("p256").public_key(), NOW.replace(tzinfo=None))


async def test_remote_root_passes_check_ca() -> None:
    key = ca_key("rsa3072")
    plan = pki.build_root_ca(key.public_key(), "Remote", lifetime=DAY, now=NOW, path_length=1)
    root = await pki.sign_certificate(
        plan.builder, key.public_key(), pki.SignatureAlgorithm.PS384, LocalSigner(key)
    )
    pki.check_ca(root, key.public_key(), NOW)
