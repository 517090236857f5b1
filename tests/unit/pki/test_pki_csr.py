"""parse_csr: accepted keys, refused keys, malformed input."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akv_issuer.pki import CSRError, PKIError, check_csr, parse_csr
from support.pki import der, make_csr, pem, private_key, run_openssl


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "p256", "p384", "p521", "ed25519"])
def test_accepts_supported_keys(kind: str) -> None:
    csr = make_csr(private_key(kind))
    parsed = parse_csr(pem(csr))
    assert der(parsed) == der(csr)


def test_accepts_str_and_surrounding_whitespace() -> None:
    csr = make_csr(private_key("p256"))
    text = "\n\n  \t" + pem(csr).decode() + "\r\n  \n"
    assert der(parse_csr(text)) == der(csr)
    assert der(parse_csr(text.encode())) == der(csr)


def test_accepts_sha384_and_sha512_self_signatures() -> None:
    for hash_algorithm in (hashes.SHA384(), hashes.SHA512()):
        parse_csr(pem(make_csr(private_key("rsa2048"), hash_algorithm=hash_algorithm)))


def test_csr_error_is_a_pki_error_with_one_line_reason() -> None:
    with pytest.raises(PKIError) as info:
        parse_csr("")
    assert isinstance(info.value, CSRError)
    assert info.value.reason == "CSR is empty"
    assert str(info.value) == info.value.reason


def _reason(data: bytes | str) -> str:
    with pytest.raises(CSRError) as info:
        parse_csr(data)
    assert "\n" not in info.value.reason
    return info.value.reason


def test_refuses_small_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert _reason(pem(make_csr(key))) == (
        "CSR key is RSA 1024-bit; RSA keys must have 2048 to 8192 bits"
    )


class _OversizedRSAKey(rsa.RSAPrivateKey):
    """Claims a 8200-bit public key but signs with a real 2048-bit key: enough
    to exercise the upper size bound without generating a huge key."""

    def __init__(self) -> None:
        inner = private_key("rsa2048")
        assert isinstance(inner, rsa.RSAPrivateKey)
        self._inner = inner
        modulus = (1 << 8199) | 0xFFFF_FFFF_FFFF_FFFF  # odd, exactly 8200 bits
        self._public = rsa.RSAPublicNumbers(65537, modulus).public_key()

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo,
    ) -> bytes:
        return self._inner.sign(data, padding, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise NotImplementedError

    def private_bytes(self, *args: object) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> _OversizedRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _OversizedRSAKey:
        return self


def test_refuses_oversized_rsa_key() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(_OversizedRSAKey(), hashes.SHA256())
    )
    assert _reason(pem(csr)) == "CSR key is RSA 8200-bit; RSA keys must have 2048 to 8192 bits"


def test_refuses_other_curves() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    assert _reason(pem(make_csr(key))) == (
        "CSR key uses the elliptic curve secp256k1; only P-256, P-384 and P-521 are accepted"
    )


@pytest.mark.parametrize(
    ("key", "label"),
    [
        (dsa.generate_private_key(key_size=2048), "DSA 2048-bit"),
        (ed448.Ed448PrivateKey.generate(), "Ed448"),
    ],
    ids=["dsa", "ed448"],
)
def test_refuses_other_key_types(
    key: dsa.DSAPrivateKey | ed448.Ed448PrivateKey, label: str
) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    csr = builder.sign(key, None if isinstance(key, ed448.Ed448PrivateKey) else hashes.SHA256())
    assert _reason(pem(csr)) == (
        f"CSR key type {label} is not accepted; use RSA (2048-8192 bits), "
        "ECDSA P-256/P-384/P-521 or Ed25519"
    )


def test_refuses_sha1_self_signature(tmp_path: Path) -> None:
    # cryptography refuses to create SHA-1 signatures; openssl still can.
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        private_key("rsa2048").private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = run_openssl("req", "-new", "-sha1", "-key", key_file, "-subj", "/CN=old")
    assert result.returncode == 0, result.stderr
    assert _reason(result.stdout) == (
        "CSR is signed with SHA1; only SHA-256, SHA-384 and SHA-512 are accepted"
    )


def _repem(data: bytes) -> bytes:
    body = base64.encodebytes(data)
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"


def test_refuses_tampered_signature() -> None:
    raw = bytearray(der(make_csr(private_key("p256"))))
    raw[-1] ^= 0x01
    reason = _reason(_repem(bytes(raw)))
    # A flipped last byte either breaks the DER of the ECDSA signature or the
    # signature itself; both must be reported as such, never as a crash.
    assert reason.startswith(("CSR signature", "CSR cannot be parsed"))


def test_refuses_tampered_content() -> None:
    csr = make_csr(private_key("rsa2048"))
    raw = der(csr).replace(b"app.example.com", b"evil.example.com"[:15])
    assert _reason(_repem(raw)) == "CSR signature does not verify against its public key"


def test_a_refused_csr_is_refused_again_by_every_check() -> None:
    """check_csr remembers CSRs that passed, never one that failed: the same
    tampered CSR is refused by parse_csr, then by check_csr on the parsed
    object and on a fresh parse of the same bytes."""
    csr = make_csr(private_key("p256"))
    raw = _repem(der(csr).replace(b"app.example.com", b"evil.example.com"[:15]))
    for _ in range(2):
        assert _reason(raw) == "CSR signature does not verify against its public key"
        loaded = x509.load_pem_x509_csr(raw)
        with pytest.raises(CSRError, match="does not verify"):
            check_csr(loaded)
    good = pem(csr)
    check_csr(parse_csr(good))  # passes, and again from memory
    check_csr(x509.load_pem_x509_csr(good))


_NOT_PEM = "CSR is not PEM-encoded: expected '-----BEGIN CERTIFICATE REQUEST-----'"
_NON_ASCII = "CSR is not PEM-encoded: it contains non-ASCII characters"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "CSR is empty"),
        (" \n\t ", "CSR is empty"),
        (
            b"\x30\x82\x01\x00",
            "CSR is not PEM-encoded: expected '-----BEGIN CERTIFICATE REQUEST-----'",
        ),
        ("hello", "CSR is not PEM-encoded: expected '-----BEGIN CERTIFICATE REQUEST-----'"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nü\n",
            "CSR is not PEM-encoded: it contains non-ASCII characters",
        ),
    ],
)
def test_refuses_non_pem(data: bytes | str, reason: str) -> None:
    assert _reason(data) == reason


def test_refuses_two_blocks() -> None:
    block = pem(make_csr(private_key("p256")))
    assert _reason(block + block) == "CSR must contain exactly one PEM block"


def test_refuses_certificate_pem() -> None:
    text = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert _reason(text).startswith("CSR cannot be parsed:")


def test_refuses_bad_base64() -> None:
    text = b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"
    assert _reason(text).startswith("CSR cannot be parsed:")


def _outcome(data: bytes | str) -> str | None:
    """None when ``data`` is accepted, else the CSRError reason; any other
    exception escapes and fails the property."""
    try:
        parse_csr(data)
    except CSRError as exc:
        return exc.reason
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_arbitrary_input_raises_only_csr_error(data: bytes | str) -> None:
    reason = _outcome(data)
    assert reason is None or (reason and "\n" not in reason)


_VALID_DER = der(make_csr(private_key("p256")))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID_DER) - 1), st.integers(0, 255)), max_size=4),
    st.integers(1, len(_VALID_DER)),
)
def test_mutated_csr_raises_only_csr_error(edits: list[tuple[int, int]], length: int) -> None:
    raw = bytearray(_VALID_DER)
    for index, value in edits:
        raw[index] = value
    reason = _outcome(_repem(bytes(raw[:length])))
    assert reason is None or reason
