"""Remote signing: algorithm choice, two-pass assembly, verification, and the
CA x CSR key matrix checked by openssl."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from akv_issuer import pki
from akv_issuer.pki import (
    AlgorithmError,
    IssuanceRequest,
    IssuerProfile,
    SignatureAlgorithm,
    SignatureError,
)
from support.pki import (
    CA_KEY_KINDS,
    CSR_KEY_KINDS,
    LocalSigner,
    ca_key,
    make_csr,
    make_root,
    name,
    openssl_verify_strict,
    pem,
    private_key,
    run_openssl,
)


@pytest.mark.parametrize(
    ("kind", "pss", "expected"),
    [
        ("rsa2048", False, SignatureAlgorithm.RS256),
        ("rsa3072", False, SignatureAlgorithm.RS384),
        ("rsa4096", False, SignatureAlgorithm.RS512),
        ("rsa2048", True, SignatureAlgorithm.PS256),
        ("rsa3072", True, SignatureAlgorithm.PS384),
        ("rsa4096", True, SignatureAlgorithm.PS512),
        ("p256", False, SignatureAlgorithm.ES256),
        ("p384", True, SignatureAlgorithm.ES384),
        ("p521", False, SignatureAlgorithm.ES512),
    ],
)
def test_default_algorithm(kind: str, pss: bool, expected: SignatureAlgorithm) -> None:
    assert pki.default_algorithm(ca_key(kind).public_key(), pss=pss) is expected


@pytest.mark.parametrize(
    ("ca_kind", "ca_pss", "key_kind", "pss", "expected"),
    [
        # A PSS-signed CA keeps PSS; the hash follows the key size.
        ("rsa2048", True, "rsa2048", False, SignatureAlgorithm.PS256),
        ("rsa4096", True, "rsa4096", False, SignatureAlgorithm.PS512),
        # A PKCS#1 v1.5 CA keeps PKCS#1 v1.5, unless PSS is asked for.
        ("rsa3072", False, "rsa3072", False, SignatureAlgorithm.RS384),
        ("rsa3072", False, "rsa3072", True, SignatureAlgorithm.PS384),
        # An intermediate whose certificate a PSS root signed: its own key
        # decides the scheme family (EC: ECDSA; RSA: PSS like its certificate).
        ("rsa2048", True, "p384", False, SignatureAlgorithm.ES384),
        ("rsa2048", True, "rsa3072", False, SignatureAlgorithm.PS384),
        ("p256", False, "rsa2048", False, SignatureAlgorithm.RS256),
    ],
)
async def test_ca_signature_algorithm_keeps_the_cas_own_scheme(
    ca_kind: str, ca_pss: bool, key_kind: str, pss: bool, expected: SignatureAlgorithm
) -> None:
    ca = await _root_for(ca_kind, ca_pss)
    assert pki.is_pss_signed(ca) is ca_pss
    key = ca_key(key_kind).public_key()
    assert pki.ca_signature_algorithm(ca, key, pss=pss) is expected


def test_ca_signature_algorithm_without_a_ca_certificate_is_the_default() -> None:
    key = ca_key("rsa2048").public_key()
    assert pki.ca_signature_algorithm(None, key) is SignatureAlgorithm.RS256
    assert pki.ca_signature_algorithm(None, key, pss=True) is SignatureAlgorithm.PS256


async def test_a_pss_ca_signs_leaves_with_pss_by_default(tmp_path: Path) -> None:
    root = await _root_for("rsa2048", True)
    key = ca_key("rsa2048")
    algorithm = pki.ca_signature_algorithm(root, key.public_key())
    now = datetime.datetime.now(datetime.UTC)
    plan = pki.build_certificate(
        make_csr(private_key("p256")), IssuanceRequest(), root, IssuerProfile(), now
    )
    leaf = await pki.sign_certificate(plan.builder, key.public_key(), algorithm, LocalSigner(key))
    assert pki.is_pss_signed(leaf)
    result = openssl_verify_strict(tmp_path, root, leaf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_algorithm_refuses_unsupported_keys() -> None:
    with pytest.raises(AlgorithmError, match="ECDSA secp256k1 is not supported"):
        pki.default_algorithm(ec.generate_private_key(ec.SECP256K1()).public_key())
    with pytest.raises(AlgorithmError, match="Ed25519 is not supported"):
        pki.default_algorithm(ed25519.Ed25519PrivateKey.generate().public_key())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AlgorithmError, match="RSA 1024-bit is too small"):
        pki.default_algorithm(small.public_key())


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [
        ("rsa2048", SignatureAlgorithm.ES256),
        ("p256", SignatureAlgorithm.RS256),
        ("p256", SignatureAlgorithm.ES384),
        ("p521", SignatureAlgorithm.ES256),
    ],
)
def test_algorithm_must_fit_the_key(kind: str, algorithm: SignatureAlgorithm) -> None:
    with pytest.raises(AlgorithmError, match=f"algorithm {algorithm} does not fit the CA key"):
        pki.check_algorithm(ca_key(kind).public_key(), algorithm)


def test_any_rsa_algorithm_fits_an_rsa_key() -> None:
    key = ca_key("rsa2048").public_key()
    for algorithm in SignatureAlgorithm:
        if algorithm.is_rsa:
            assert pki.check_algorithm(key, algorithm) is key


# The matrix. Roots are signed through the same remote path (one per CA key and
# padding); leaves for each CSR key are checked by openssl in strict mode.

_CASES = [
    (ca_kind, csr_kind, pss)
    for ca_kind, csr_kind in itertools.product(CA_KEY_KINDS, CSR_KEY_KINDS)
    for pss in ((False, True) if ca_kind.startswith("rsa") else (False,))
]
_roots: dict[tuple[str, bool], x509.Certificate] = {}


async def _root_for(kind: str, pss: bool) -> x509.Certificate:
    if (kind, pss) not in _roots:
        _roots[kind, pss] = await make_root(kind, pss=pss, subject=f"Matrix {kind} CA")
    return _roots[kind, pss]


@pytest.mark.parametrize(
    ("ca_kind", "csr_kind", "pss"),
    _CASES,
    ids=[f"{ca}-{csr}-{'pss' if pss else 'pkcs1'}" for ca, csr, pss in _CASES],
)
async def test_matrix_passes_openssl_strict(
    ca_kind: str, csr_kind: str, pss: bool, tmp_path: Path
) -> None:
    root = await _root_for(ca_kind, pss)
    key = ca_key(ca_kind)
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    csr = pki.parse_csr(pem(make_csr(private_key(csr_kind))))
    now = datetime.datetime.now(datetime.UTC)
    request = IssuanceRequest(usages=("digital signature", "key encipherment", "server auth"))
    plan = pki.build_certificate(csr, request, root, IssuerProfile(), now)
    signer = LocalSigner(key)
    cert = await pki.sign_certificate(plan.builder, key.public_key(), algorithm, signer)

    assert [called for called, _ in signer.calls] == [algorithm]
    assert cert.serial_number == plan.serial_number
    result = openssl_verify_strict(tmp_path, root, cert)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    purpose = run_openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        tmp_path / "ca.pem",
        tmp_path / "leaf.pem",
    )
    assert purpose.returncode == 0, purpose.stdout + purpose.stderr
    text = run_openssl("x509", "-in", tmp_path / "leaf.pem", "-text", "-noout")
    assert text.returncode == 0, text.stderr
    expected_algorithm = (
        "rsassaPss"
        if pss
        else {
            SignatureAlgorithm.RS256: "sha256WithRSAEncryption",
            SignatureAlgorithm.RS384: "sha384WithRSAEncryption",
            SignatureAlgorithm.RS512: "sha512WithRSAEncryption",
            SignatureAlgorithm.ES256: "ecdsa-with-SHA256",
            SignatureAlgorithm.ES384: "ecdsa-with-SHA384",
            SignatureAlgorithm.ES512: "ecdsa-with-SHA512",
        }[algorithm]
    )
    assert f"Signature Algorithm: {expected_algorithm}" in text.stdout
    assert "DNS:app.example.com" in text.stdout
    if pss:
        assert f"Salt Length: 0x{algorithm.hash_algorithm.digest_size:X}" in text.stdout


class _WrongKeySigner:
    """Signs with another key of the same type: a plausible misconfiguration
    (secret and key from different vault objects)."""

    def __init__(self, kind: str) -> None:
        other = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind.startswith("rsa")
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.inner = LocalSigner(other)

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        return await self.inner.sign_digest(algorithm, digest)


async def _leaf_plan(root: x509.Certificate) -> pki.CertificatePlan:
    csr = make_csr(private_key("p256"))
    now = datetime.datetime.now(datetime.UTC)
    return pki.build_certificate(csr, IssuanceRequest(), root, IssuerProfile(), now)


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
async def test_signature_from_another_key_is_never_returned(kind: str) -> None:
    root = await _root_for(kind, False)
    plan = await _leaf_plan(root)
    key = ca_key(kind).public_key()
    with pytest.raises(SignatureError, match="does not verify against the CA public key"):
        await pki.sign_certificate(
            plan.builder, key, pki.default_algorithm(key), _WrongKeySigner(kind)
        )


class _FixedSigner:
    def __init__(self, signature: bytes) -> None:
        self.signature = signature

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        return self.signature


@pytest.mark.parametrize(
    ("kind", "signature", "reason"),
    [
        ("p256", b"\x01" * 63, "the remote ECDSA signature has 63 bytes, expected 64 (r || s)"),
        ("p256", b"0" * 70, "the remote ECDSA signature has 70 bytes, expected 64 (r || s)"),
        ("rsa2048", b"\x01" * 257, "the remote RSA signature has 257 bytes, expected 256"),
        ("rsa2048", b"", "the remote RSA signature has 0 bytes, expected 256"),
    ],
)
async def test_malformed_remote_signatures(kind: str, signature: bytes, reason: str) -> None:
    root = await _root_for(kind, False)
    plan = await _leaf_plan(root)
    key = ca_key(kind).public_key()
    with pytest.raises(SignatureError) as info:
        await pki.sign_certificate(
            plan.builder, key, pki.default_algorithm(key), _FixedSigner(signature)
        )
    assert info.value.reason == reason


class _StrippingSigner:
    """Returns RSA signatures as a big integer would be serialised, without
    leading zero octets; the assembly must restore the modulus length."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.inner = LocalSigner(key)
        self.stripped = False

    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        signature = await self.inner.sign_digest(algorithm, digest)
        self.stripped = signature[0] == 0
        return signature.lstrip(b"\x00")


async def test_short_rsa_signature_is_left_padded(tmp_path: Path) -> None:
    root = await _root_for("rsa2048", False)
    key = ca_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = _StrippingSigner(key)
    # About one PKCS#1 v1.5 signature in 256 starts with a zero octet.
    for _ in range(4096):
        plan = await _leaf_plan(root)
        cert = await pki.sign_certificate(
            plan.builder, key.public_key(), SignatureAlgorithm.RS256, signer
        )
        if signer.stripped:
            break
    assert signer.stripped
    assert len(cert.signature) == 256
    result = openssl_verify_strict(tmp_path, root, cert)
    assert result.returncode == 0, result.stdout + result.stderr


class _SignerDown(Exception):
    pass


class _FailingSigner:
    async def sign_digest(self, algorithm: SignatureAlgorithm, digest: bytes) -> bytes:
        raise _SignerDown("503 from the vault")


async def test_signer_errors_propagate_unchanged() -> None:
    root = await _root_for("p256", False)
    plan = await _leaf_plan(root)
    key = ca_key("p256").public_key()
    with pytest.raises(_SignerDown, match="503 from the vault"):
        await pki.sign_certificate(plan.builder, key, SignatureAlgorithm.ES256, _FailingSigner())


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096"])
async def test_a_certificate_is_the_bytes_the_builder_itself_would_sign(kind: str) -> None:
    """The certificate is put together from the TBS and the remote signature
    (no second builder pass); PKCS#1 v1.5 is deterministic, so a local signature
    of the same builder must give the very same DER."""
    root = await _root_for(kind, False)
    plan = await _leaf_plan(root)
    key = ca_key(kind)
    assert isinstance(key, rsa.RSAPrivateKey)
    algorithm = pki.default_algorithm(key.public_key())
    cert = await pki.sign_certificate(plan.builder, key.public_key(), algorithm, LocalSigner(key))
    local = plan.builder.sign(key, algorithm.hash_algorithm)
    assert cert.public_bytes(Encoding.DER) == local.public_bytes(Encoding.DER)


async def test_digest_is_of_the_tbs_bytes() -> None:
    root = await _root_for("p384", False)
    plan = await _leaf_plan(root)
    key = ca_key("p384")
    signer = LocalSigner(key)
    cert = await pki.sign_certificate(
        plan.builder, key.public_key(), SignatureAlgorithm.ES384, signer
    )
    digest = hashes.Hash(hashes.SHA384())
    digest.update(cert.tbs_certificate_bytes)
    assert signer.calls == [(SignatureAlgorithm.ES384, digest.finalize())]


@pytest.mark.parametrize(("kind", "pss"), [("rsa3072", True), ("rsa2048", False), ("p521", False)])
async def test_intermediate_ca_through_sign_csr(kind: str, pss: bool, tmp_path: Path) -> None:
    """`ca csr` flow: the remote key gets a CSR, an existing root signs it, the
    remote key then issues leaves whose chain openssl accepts."""
    root_key = ca_key("p384")
    root = await _root_for("p384", False)
    key = ca_key(kind)
    algorithm = pki.default_algorithm(key.public_key(), pss=pss)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Intermediate {kind}"),
        ]
    )
    constraints = x509.Extension(
        x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=True, path_length=0)
    )
    csr = await pki.sign_csr(subject, key.public_key(), algorithm, LocalSigner(key), [constraints])
    parsed = pki.parse_csr(pem(csr))
    assert parsed.subject == subject
    (tmp_path / "int.csr").write_bytes(pem(csr))
    req = run_openssl("req", "-in", tmp_path / "int.csr", "-verify", "-noout")
    assert req.returncode == 0, req.stderr

    now = datetime.datetime.now(datetime.UTC)
    profile = IssuerProfile(policy=pki.IssuancePolicy(allow_ca=True))
    int_plan = pki.build_certificate(parsed, IssuanceRequest(is_ca=True), root, profile, now)
    assert int_plan.path_length == 0
    intermediate = await pki.sign_certificate(
        int_plan.builder, root_key.public_key(), SignatureAlgorithm.ES384, LocalSigner(root_key)
    )
    pki.check_ca(intermediate, key.public_key(), now)
    # CA certificates: keyCertSign, cRLSign, digitalSignature, and no
    # keyEncipherment (RFC 3279: a CA's key SHOULD NOT; RFC 8813 for EC).
    usage = intermediate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert pki.usages.key_usage_bits(usage) == pki.CA_KEY_USAGE

    leaf_plan = pki.build_certificate(
        make_csr(private_key("ed25519")), IssuanceRequest(), intermediate, IssuerProfile(), now
    )
    leaf = await pki.sign_certificate(
        leaf_plan.builder, key.public_key(), algorithm, LocalSigner(key)
    )
    result = openssl_verify_strict(tmp_path, root, leaf, untrusted=[intermediate])
    assert result.returncode == 0, result.stdout + result.stderr

    certificate_pem, ca_pem = pki.split_chain(leaf, [intermediate, root])
    assert certificate_pem == pem(leaf) + pem(intermediate)
    assert ca_pem == pem(root)


async def test_sign_csr_refuses_mismatched_algorithm() -> None:
    key = ca_key("p256").public_key()
    with pytest.raises(AlgorithmError):
        await pki.sign_csr(name("x"), key, SignatureAlgorithm.PS256, LocalSigner(ca_key("p256")))


async def test_sign_csr_with_foreign_signature_is_refused() -> None:
    key = ca_key("rsa2048").public_key()
    with pytest.raises(SignatureError, match="does not verify"):
        await pki.sign_csr(name("x"), key, SignatureAlgorithm.RS256, _WrongKeySigner("rsa2048"))
