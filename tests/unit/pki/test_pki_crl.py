"""CRLs: the RFC 5280 template, remote signing for every CA key and algorithm
(checked by openssl, including `verify -crl_check` of a revoked and an
unrevoked leaf), and the refusals. Local keys play the remote signer."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_issuer import pki
from akv_issuer.pki import (
    AlgorithmError,
    IssuanceRequest,
    IssuerProfile,
    PolicyError,
    RevokedCertificate,
    SignatureAlgorithm,
    SignatureError,
)
from akv_issuer.pki.usages import KEY_USAGE_BITS
from support.pki import (
    CA_KEY_KINDS,
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

UTC = datetime.UTC
NOW = datetime.datetime(2030, 5, 17, 12, 30, 45, 987654, tzinfo=UTC)
WEEK = datetime.timedelta(days=7)

_CASES = [
    (kind, pss)
    for kind in CA_KEY_KINDS
    for pss in ((False, True) if kind[:3] == "rsa" else (False,))
]
_roots: dict[tuple[str, bool], x509.Certificate] = {}


async def _root_for(kind: str, pss: bool = False) -> x509.Certificate:
    if (kind, pss) not in _roots:
        _roots[kind, pss] = await make_root(
            kind, pss=pss, subject=f"CRL {kind} CA", lifetime=datetime.timedelta(days=3650)
        )
    return _roots[kind, pss]


async def _sign(
    builder: x509.CertificateRevocationListBuilder, kind: str, pss: bool = False
) -> x509.CertificateRevocationList:
    key = ca_key(kind)
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    return await pki.sign_crl(builder, key.public_key(), algorithm, LocalSigner(key))


def _crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _entries() -> list[RevokedCertificate]:
    return [
        RevokedCertificate(0x1D2C3B4A, NOW - datetime.timedelta(hours=2)),
        RevokedCertificate(
            0xABCDEF0123456789,
            NOW - datetime.timedelta(hours=1),
            x509.ReasonFlags.key_compromise,
            NOW - datetime.timedelta(days=3),
        ),
        RevokedCertificate(7, NOW, x509.ReasonFlags.unspecified),
        RevokedCertificate(2**159 - 1, NOW, x509.ReasonFlags.cessation_of_operation),
    ]


@pytest.mark.parametrize(
    ("kind", "pss"), _CASES, ids=[f"{k}-{'pss' if p else 'pkcs1'}" for k, p in _CASES]
)
async def test_every_ca_key_and_algorithm_passes_openssl(
    kind: str, pss: bool, tmp_path: Path
) -> None:
    root = await _root_for(kind, pss)
    key = ca_key(kind)
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    builder = pki.build_crl(
        root, _entries(), crl_number=42, this_update=NOW, next_update=NOW + WEEK
    )
    signer = LocalSigner(key)
    crl = await pki.sign_crl(builder, key.public_key(), algorithm, signer)

    assert [called for called, _ in signer.calls] == [algorithm]
    digest = hashes.Hash(algorithm.hash_algorithm)
    digest.update(crl.tbs_certlist_bytes)
    assert signer.calls[0][1] == digest.finalize()
    assert crl.is_signature_valid(key.public_key())
    (tmp_path / "ca.pem").write_bytes(pem(root))
    (tmp_path / "crl.pem").write_bytes(_crl_pem(crl))
    result = run_openssl(
        "crl", "-verify", "-CAfile", tmp_path / "ca.pem", "-in", tmp_path / "crl.pem", "-noout"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify OK" in result.stdout + result.stderr
    text = run_openssl("crl", "-in", tmp_path / "crl.pem", "-text", "-noout").stdout
    assert "Version 2 (0x1)" in text
    assert "X509v3 CRL Number: \n                42" in text
    if pss:
        assert "Signature Algorithm: rsassaPss" in text
        assert f"Salt Length: 0x{algorithm.hash_algorithm.digest_size:X}" in text
    assert "Key Compromise" in text
    assert "Cessation Of Operation" in text
    assert "Invalidity Date: \n                May 14 12:30:45 2030 GMT" in text


async def test_template_fields() -> None:
    root = await _root_for("p256")
    this_update = datetime.datetime(
        2030, 5, 17, 14, 30, 45, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    builder = pki.build_crl(
        root, _entries(), crl_number=0, this_update=this_update, next_update=this_update + WEEK
    )
    crl = await _sign(builder, "p256")

    assert crl.issuer == root.subject
    assert crl.last_update_utc == datetime.datetime(2030, 5, 17, 12, 30, 45, tzinfo=UTC)
    assert crl.next_update_utc == datetime.datetime(2030, 5, 24, 12, 30, 45, tzinfo=UTC)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 0
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not aki.critical
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.value.key_identifier == ski.digest
    assert aki.value.authority_cert_issuer is None
    # Sorted by serial whatever the input order.
    assert [entry.serial_number for entry in crl] == [7, 0x1D2C3B4A, 0xABCDEF0123456789, 2**159 - 1]

    plain = crl.get_revoked_certificate_by_serial_number(0x1D2C3B4A)
    assert plain is not None
    assert len(plain.extensions) == 0
    assert plain.revocation_date_utc == datetime.datetime(2030, 5, 17, 10, 30, 45, tzinfo=UTC)
    unspecified = crl.get_revoked_certificate_by_serial_number(7)
    assert unspecified is not None
    assert len(unspecified.extensions) == 0  # RFC 5280 5.3.1: omit rather than unspecified
    compromised = crl.get_revoked_certificate_by_serial_number(0xABCDEF0123456789)
    assert compromised is not None
    reason = compromised.extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason is x509.ReasonFlags.key_compromise
    assert not reason.critical
    invalidity = compromised.extensions.get_extension_for_class(x509.InvalidityDate)
    assert invalidity.value.invalidity_date_utc == datetime.datetime(
        2030, 5, 14, 12, 30, 45, tzinfo=UTC
    )
    assert not invalidity.critical


async def test_every_reason_but_unspecified_is_written() -> None:
    root = await _root_for("p256")
    reasons = [
        r
        for r in x509.ReasonFlags
        if r not in (x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl)
    ]
    entries = [RevokedCertificate(i + 1, NOW, reason) for i, reason in enumerate(reasons)]
    crl = await _sign(
        pki.build_crl(root, entries, crl_number=1, this_update=NOW, next_update=NOW + WEEK), "p256"
    )
    for entry, reason in zip(crl, reasons, strict=True):
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is reason


async def test_aki_is_computed_from_the_key_when_the_ca_has_no_ski() -> None:
    key = ca_key("rsa2048")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("No SKI CA"))
        .issuer_name(name("No SKI CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - WEEK)
        .not_valid_after(NOW + 100 * WEEK)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    root = sign_locally(builder, key)
    crl = await _sign(
        pki.build_crl(root, [], crl_number=3, this_update=NOW, next_update=NOW + WEEK), "rsa2048"
    )
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    expected = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert aki.key_identifier == expected
    assert len(crl) == 0


async def test_empty_crl_verifies(tmp_path: Path) -> None:
    root = await _root_for("p384")
    crl = await _sign(
        pki.build_crl(root, [], crl_number=1, this_update=NOW, next_update=NOW + WEEK), "p384"
    )
    assert len(crl) == 0
    (tmp_path / "ca.pem").write_bytes(pem(root))
    (tmp_path / "crl.pem").write_bytes(_crl_pem(crl))
    result = run_openssl(
        "crl", "-verify", "-CAfile", tmp_path / "ca.pem", "-in", tmp_path / "crl.pem", "-noout"
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("kind", "pss"), [("rsa2048", True), ("p256", False)])
async def test_openssl_crl_check_refuses_the_revoked_leaf_only(
    kind: str, pss: bool, tmp_path: Path
) -> None:
    root = await _root_for(kind, pss)
    key = ca_key(kind)
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    now = datetime.datetime.now(UTC)
    leaves = []
    for _ in range(2):
        plan = pki.build_certificate(
            make_csr(private_key("p256")), IssuanceRequest(), root, IssuerProfile(), now
        )
        leaves.append(
            await pki.sign_certificate(plan.builder, key.public_key(), algorithm, LocalSigner(key))
        )
    revoked, kept = leaves
    builder = pki.build_crl(
        root,
        [RevokedCertificate(revoked.serial_number, now, x509.ReasonFlags.superseded)],
        crl_number=1,
        this_update=now,
        next_update=now + WEEK,
    )
    crl = await pki.sign_crl(builder, key.public_key(), algorithm, LocalSigner(key))
    (tmp_path / "ca.pem").write_bytes(pem(root))
    (tmp_path / "crl.pem").write_bytes(_crl_pem(crl))
    (tmp_path / "revoked.pem").write_bytes(pem(revoked))
    (tmp_path / "kept.pem").write_bytes(pem(kept))
    common: tuple[str | Path, ...] = (
        *("verify", "-x509_strict", "-crl_check", "-CAfile", tmp_path / "ca.pem"),
        *("-CRLfile", tmp_path / "crl.pem"),
    )

    refused = run_openssl(*common, tmp_path / "revoked.pem")
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = run_openssl(*common, tmp_path / "kept.pem")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert accepted.stdout.strip().endswith(": OK")


# Refusals.


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (
            {"crl_number": -1},
            "CRL number must be between 0 and 2^159-1 (RFC 5280 5.2.3), got -1",
        ),
        (
            {"crl_number": 2**159},
            f"CRL number must be between 0 and 2^159-1 (RFC 5280 5.2.3), got {2**159}",
        ),
        (
            {"next_update": NOW},
            "next update 2030-05-17T12:30:45+00:00 must be after this update "
            "2030-05-17T12:30:45+00:00",
        ),
        (
            # Equal once both are truncated to whole seconds.
            {"next_update": NOW.replace(microsecond=999999)},
            "next update 2030-05-17T12:30:45+00:00 must be after this update "
            "2030-05-17T12:30:45+00:00",
        ),
        (
            {"next_update": NOW - WEEK},
            "next update 2030-05-10T12:30:45+00:00 must be after this update "
            "2030-05-17T12:30:45+00:00",
        ),
    ],
)
async def test_bad_crl_parameters(kwargs: dict[str, object], reason: str) -> None:
    root = await _root_for("p256")
    arguments: dict[str, object] = {
        "crl_number": 1,
        "this_update": NOW,
        "next_update": NOW + WEEK,
    } | kwargs
    with pytest.raises(PolicyError) as info:
        pki.build_crl(root, [], **arguments)  # type: ignore[arg-type]
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (
            [
                RevokedCertificate(0x1F, NOW),
                RevokedCertificate(2, NOW),
                RevokedCertificate(31, NOW),
            ],
            "serial number 0x1F is listed twice",
        ),
        ([RevokedCertificate(0, NOW)], "serial number 0x0 is not a positive integer"),
        ([RevokedCertificate(-5, NOW)], "serial number -0x5 is not a positive integer"),
        ([RevokedCertificate(2**159, NOW)], "serial number 0x8000"),
        (
            [RevokedCertificate(9, NOW, x509.ReasonFlags.remove_from_crl)],
            "serial number 0x9: reason removeFromCRL is only for delta CRLs",
        ),
        (
            [RevokedCertificate(0x2A, NOW + datetime.timedelta(seconds=1))],
            "serial number 0x2A: revocation time 2030-05-17T12:30:46+00:00 is after the CRL's "
            "thisUpdate 2030-05-17T12:30:45+00:00; a CRL cannot list a future revocation",
        ),
        (
            [RevokedCertificate(0x2B, NOW - WEEK, x509.ReasonFlags.key_compromise, NOW + WEEK)],
            "serial number 0x2B: invalidity time 2030-05-24T12:30:45+00:00 is after the CRL's "
            "thisUpdate 2030-05-17T12:30:45+00:00; a CRL cannot list a future invalidity",
        ),
    ],
)
async def test_bad_entries(entries: list[RevokedCertificate], reason: str) -> None:
    root = await _root_for("p256")
    with pytest.raises(PolicyError) as info:
        pki.build_crl(root, entries, crl_number=1, this_update=NOW, next_update=NOW + WEEK)
    assert info.value.reason.startswith(reason)


async def test_dates_up_to_this_update_in_whole_seconds_are_accepted() -> None:
    # NOW has microseconds; an entry later within the same second is the same
    # whole second as thisUpdate once both are truncated, as they are written.
    root = await _root_for("p256")
    same_second = NOW.replace(microsecond=999999)
    builder = pki.build_crl(
        root,
        [RevokedCertificate(0x2C, same_second, x509.ReasonFlags.key_compromise, same_second)],
        crl_number=1,
        this_update=NOW,
        next_update=NOW + WEEK,
    )
    crl = await _sign(builder, "p256")
    entry = crl.get_revoked_certificate_by_serial_number(0x2C)
    assert entry is not None
    assert entry.revocation_date_utc == crl.last_update_utc


def test_a_ca_without_crl_sign_is_refused() -> None:
    key = ca_key("p256")
    usage = dict.fromkeys(KEY_USAGE_BITS, False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("Cert Only CA"))
        .issuer_name(name("Cert Only CA"))
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - WEEK)
        .not_valid_after(NOW + 100 * WEEK)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage | {"key_cert_sign": True}), critical=True)
    )
    root = sign_locally(builder, key)
    with pytest.raises(pki.CAError) as info:
        pki.build_crl(root, [], crl_number=1, this_update=NOW, next_update=NOW + WEEK)
    assert info.value.kind is pki.CAErrorKind.NOT_A_CA
    assert info.value.reason == (
        "the CA certificate 'CN=Cert Only CA' does not allow CRL signing "
        "(cRLSign missing from its key usage)"
    )


async def test_naive_times_are_a_programming_error() -> None:
    root = await _root_for("p256")
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="this_update must be timezone-aware"):
        pki.build_crl(root, [], crl_number=1, this_update=naive, next_update=NOW + WEEK)
    with pytest.raises(ValueError, match="revocation_date must be timezone-aware"):
        pki.build_crl(
            root,
            [RevokedCertificate(1, naive)],
            crl_number=1,
            this_update=NOW,
            next_update=NOW + WEEK,
        )
    with pytest.raises(ValueError, match="invalidity_date must be timezone-aware"):
        pki.build_crl(
            root,
            [RevokedCertificate(1, NOW, None, naive)],
            crl_number=1,
            this_update=NOW,
            next_update=NOW + WEEK,
        )


class _WrongKeySigner:
    def __init__(self, kind: str) -> None:
        other = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind.startswith("rsa")
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.inner = LocalSigner(other)

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        return await self.inner.sign_digest(algorithm, digest)


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
async def test_signature_from_another_key_is_never_returned(kind: str) -> None:
    root = await _root_for(kind)
    builder = pki.build_crl(root, [], crl_number=1, this_update=NOW, next_update=NOW + WEEK)
    key = ca_key(kind).public_key()
    with pytest.raises(SignatureError, match="does not verify against the CA public key"):
        await pki.sign_crl(builder, key, pki.default_algorithm(key), _WrongKeySigner(kind))


async def test_algorithm_must_fit_the_key() -> None:
    root = await _root_for("p256")
    builder = pki.build_crl(root, [], crl_number=1, this_update=NOW, next_update=NOW + WEEK)
    key = ca_key("p256")
    with pytest.raises(AlgorithmError, match="algorithm ES384 does not fit"):
        await pki.sign_crl(builder, key.public_key(), SignatureAlgorithm.ES384, LocalSigner(key))


class _SignerDown(Exception):
    pass


class _FailingSigner:
    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        raise _SignerDown("429 from the vault")


async def test_signer_errors_propagate_unchanged() -> None:
    root = await _root_for("p256")
    builder = pki.build_crl(root, [], crl_number=1, this_update=NOW, next_update=NOW + WEEK)
    with pytest.raises(_SignerDown, match="429 from the vault"):
        await pki.sign_crl(
            builder, ca_key("p256").public_key(), SignatureAlgorithm.ES256, _FailingSigner()
        )
