"""Scenario 7: hostile CSRs, generated and mutated with knowledge of their DER structure.

A CSR is ``SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }``.
Mutating bytes blindly only ever tests the signature check, so most
mutations here change the *structure* of the request info (lengths, OIDs,
nesting, string types, attribute and extension layout, the key) and then
re-sign it with the CSR's own key, so the parser and the issuance code behind
the signature check see them. Others break the signature, the outer
lengths, the PEM armour, or use keys of the wrong kind or size.

Each CSR goes through ``akv-issuer sign`` (its ``main`` in this process, a
sample through the real command) and a sample as CertificateRequests through
the controller. Each must end either signed with a certificate that
``openssl verify -x509_strict`` accepts and whose subject and SANs equal the
CSR's, or refused with a one-line error (CLI) or ``Failed`` with a
documented reason prefix (controller); zero crashes, zero tracebacks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from lightkube import ApiError

from bench.chaos.world import World, approve_all, request_state, retrying, settle
from bench.env import bounded

SEED = 1515
REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_PREFIXES = ("InvalidCSR:", "PolicyViolation:", "InvalidRequest:")

# ---------------------------------------------------------------------------
# DER


@dataclass
class Node:
    tag: int  # single-byte tags only (all a CSR uses)
    value: bytes = b""
    children: list[Node] | None = None
    raw: bytes | None = None  # already encoded (deep nesting built without recursion)

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(node: Node) -> bytes:
    if node.raw is not None:
        return node.raw
    body = b"".join(encode(c) for c in node.children) if node.children is not None else node.value
    return bytes([node.tag]) + _length(len(body)) + body


def parse(data: bytes) -> Node:
    node, end = _parse(data, 0, 0)
    if end != len(data):
        raise ValueError("trailing data")
    return node


def _parse(data: bytes, pos: int, depth: int) -> tuple[Node, int]:
    if depth > 50:
        raise ValueError("too deep")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    body = data[pos : pos + length]
    if len(body) != length:
        raise ValueError("truncated")
    if tag & 0x20:
        children, at = [], 0
        while at < len(body):
            child, at = _parse(body, at, depth + 1)
            children.append(child)
        return Node(tag, children=children), pos + length
    return Node(tag, value=body), pos + length


def walk(node: Node) -> list[Node]:
    out = [node]
    for child in node.children or []:
        out.extend(walk(child))
    return out


def oid_bytes(arcs: list[int]) -> bytes:
    """DER content of an OID; any arcs, even ones no registry would hand out."""
    first = [arcs[0] * 40 + arcs[1]] if len(arcs) >= 2 else list(arcs)
    out = bytearray()
    for arc in first + arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


# ---------------------------------------------------------------------------
# Keys and base CSRs


@dataclass
class Keys:
    good: list[Any]  # keys the issuer accepts
    odd: dict[str, Any]  # keys it must refuse (or that are unusual)


def make_keys() -> Keys:
    good = [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 3072),
        ed25519.Ed25519PrivateKey.generate(),
    ]
    odd = {
        "rsa-1024": rsa.generate_private_key(65537, 1024),  # noqa: S505 - must be refused
        "rsa-1536": rsa.generate_private_key(65537, 1536),  # noqa: S505 - must be refused
        "rsa-4096": rsa.generate_private_key(65537, 4096),
        "rsa-e3": rsa.generate_private_key(3, 2048),
        "ec-p192": ec.generate_private_key(ec.SECP192R1()),
        "ec-p224": ec.generate_private_key(ec.SECP224R1()),
        "ec-secp256k1": ec.generate_private_key(ec.SECP256K1()),
        "ec-brainpool256": ec.generate_private_key(ec.BrainpoolP256R1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "dsa-2048": dsa.generate_private_key(2048),
    }
    return Keys(good, odd)


def _hash_for(key: Any) -> hashes.HashAlgorithm | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def build_csr(
    key: Any,
    cn: str | None = "hostile.example.com",
    sans: list[x509.GeneralName] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    hash_alg: hashes.HashAlgorithm | str | None = "auto",
    attributes: list[x509.NameAttribute[Any]] | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder()
    names = list(attributes or [])
    if cn is not None:  # unvalidated: empty and over-long names are part of the test
        names.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False))
    builder = builder.subject_name(x509.Name(names))
    if sans is None:
        sans = [x509.DNSName(cn or "hostile.example.com")]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = _hash_for(key) if hash_alg == "auto" else hash_alg
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def resign(cri: Node, key: Any, sig_alg: Node, hash_alg: hashes.HashAlgorithm | None) -> bytes:
    """Re-sign a (mutated) certificationRequestInfo with ``key``."""
    tbs = encode(cri)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), hash_alg or hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs, ec.ECDSA(hash_alg or hashes.SHA256()))
    elif isinstance(key, dsa.DSAPrivateKey):
        signature = key.sign(tbs, hash_alg or hashes.SHA256())
    else:
        signature = key.sign(tbs)
    return encode(Node(0x30, children=[cri, sig_alg, Node(0x03, value=b"\0" + signature)]))


def pem(der: bytes, label: str = "CERTIFICATE REQUEST") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {label}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {label}-----\n".encode()
    )


# ---------------------------------------------------------------------------
# Mutations: each takes (rng, keys) and returns PEM bytes (or raw bytes)

Mutation = Callable[[random.Random, Keys], bytes]

STRING_TAGS = (0x0C, 0x13, 0x16, 0x1E, 0x1C, 0x14, 0x12, 0x1A)
NASTY_STRINGS = (
    b"\xff\xfe\xfd",
    b"caf\xc3",  # truncated UTF-8
    b"\xed\xa0\x80",  # a UTF-16 surrogate in UTF-8
    b"a\x00b.example.com",
    b"\x00",
    b"",
    b"\xc0\xaf",  # overlong
    b"\x1b[31mred\x1b[0m",
    b"x" * 70_000,
    b"\x00a\x00b\x00c",  # BMP-ish
    b"\x00a\x00",  # odd length BMP
    "ünïcödé.example.com".encode(),
    "\u202eevil.com".encode(),
    b"*.*.example.com",
    b"-----BEGIN CERTIFICATE REQUEST-----",
)


def _base(rng: random.Random, keys: Keys) -> tuple[Node, Any]:
    key = rng.choice(keys.good)
    extras: list[tuple[x509.ExtensionType, bool]] = []
    if rng.random() < 0.5:
        extras.append(
            (
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                True,
            )
        )
    if rng.random() < 0.3:
        extras.append((x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False))
    sans: list[x509.GeneralName] = [x509.DNSName(f"h{rng.randrange(10**6)}.example.com")]
    if rng.random() < 0.3:
        sans.append(x509.IPAddress(__import__("ipaddress").ip_address("10.0.0.1")))
    der = build_csr(
        key, cn=f"base-{rng.randrange(10**6)}.example.com", sans=sans, extensions=extras
    )
    return parse(der), key


def _mutate_cri(
    rng: random.Random, keys: Keys, change: Callable[[random.Random, Node], None]
) -> bytes:
    root, key = _base(rng, keys)
    assert root.children is not None
    cri, sig_alg = root.children[0], root.children[1]
    change(rng, cri)
    return pem(resign(cri, key, sig_alg, _hash_for(key)))


def m_version(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        assert cri.children is not None
        cri.children[0].value = rng.choice([b"\x01", b"\x02", b"\xff", b"\x00\x00", b"\x7f" * 20])

    return _mutate_cri(rng, keys, change)


def m_oid(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        oids = [n for n in walk(cri) if n.tag == 0x06]
        target = rng.choice(oids)
        target.value = rng.choice(
            [
                b"",
                b"\x80",
                b"\x2a\x86",  # truncated arc
                b"\x2a\x80\x80\x01",  # non-minimal arc
                oid_bytes([1, 2, rng.randrange(2**64), rng.randrange(2**32)]),
                oid_bytes([2, 999, rng.randrange(1000)]),
                oid_bytes([1, 3, 6, 1, 4, 1, 311, rng.randrange(100)]),
                oid_bytes([2, 5, 4, rng.randrange(100)]),
                oid_bytes([2, 5, 29, rng.randrange(100)]),
                oid_bytes([1, 2, 840, 10045, 3, 1, rng.randrange(10)]),
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),
            ]
        )

    return _mutate_cri(rng, keys, change)


def m_nesting(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        nodes = [n for n in walk(cri) if n.children is not None and n.children]
        parent = rng.choice(nodes)
        assert parent.children is not None
        index = rng.randrange(len(parent.children))
        der = encode(parent.children[index])
        for _ in range(rng.choice([1, 2, 5, 50, 500, 5000])):
            der = bytes([rng.choice([0x30, 0x31, 0xA0])]) + _length(len(der)) + der
        parent.children[index] = Node(der[0], raw=der)

    return _mutate_cri(rng, keys, change)


def m_strings(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        strings = [n for n in walk(cri) if n.tag in STRING_TAGS or n.tag == 0x82]
        for target in rng.sample(strings, k=min(len(strings), rng.randint(1, 2))):
            if target.tag != 0x82 or rng.random() < 0.5:
                target.tag = rng.choice(STRING_TAGS)
            target.value = rng.choice(NASTY_STRINGS)

    return _mutate_cri(rng, keys, change)


def m_attributes(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        assert cri.children is not None
        attrs = cri.children[3]
        assert attrs.children is not None
        choice = rng.randrange(6)
        ext_req = oid_bytes([1, 2, 840, 113549, 1, 9, 14])
        if choice == 0 and attrs.children:
            attrs.children.append(attrs.children[0])  # extensionRequest twice
        elif choice == 1:
            attrs.children.append(
                Node(0x30, children=[Node(0x06, ext_req), Node(0x31, children=[])])
            )
        elif choice == 2:  # challengePassword
            pw = oid_bytes([1, 2, 840, 113549, 1, 9, 7])
            attrs.children.append(
                Node(0x30, children=[Node(0x06, pw), Node(0x31, children=[Node(0x0C, b"s3cret")])])
            )
        elif choice == 3 and attrs.children:  # the extensions' SEQUENCE twice in the SET
            attr = attrs.children[0]
            assert attr.children is not None
            values = attr.children[1]
            assert values.children is not None
            values.children.append(values.children[0])
        elif choice == 4:
            attrs.tag = rng.choice([0x31, 0x30, 0xA1, 0x04])
        elif attrs.children:  # an extension twice
            exts = attrs.children[0].children[1].children[0]  # type: ignore[index]
            assert exts.children is not None
            exts.children.append(exts.children[0])

    return _mutate_cri(rng, keys, change)


def m_extension_value(rng: random.Random, keys: Keys) -> bytes:
    def change(rng: random.Random, cri: Node) -> None:
        octets = [n for n in walk(cri) if n.tag == 0x04]
        if not octets:
            return
        target = rng.choice(octets)
        inner = bytearray(target.value)
        if inner and rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                inner[rng.randrange(len(inner))] = rng.randrange(256)
        else:
            inner = bytearray(
                rng.choice(
                    [
                        b"",
                        b"\x30\x00",
                        b"\x30\x80\x00\x00",
                        b"\x05\x00",
                        b"\x30\x03\x82\x01",
                        b"\xff",
                    ]
                )
            )
        target.value = bytes(inner)

    return _mutate_cri(rng, keys, change)


def m_spki(rng: random.Random, keys: Keys) -> bytes:
    """Change the public key and re-sign with the old key (or keep it consistent)."""

    def change(rng: random.Random, cri: Node) -> None:
        assert cri.children is not None
        spki = cri.children[2]
        assert spki.children is not None
        bits = spki.children[1]
        choice = rng.randrange(4)
        if choice == 0:
            bits.value = bits.value[: rng.randrange(1, max(2, len(bits.value)))]
        elif choice == 1:
            bits.value = bytes([rng.randrange(8)]) + bits.value[1:]
        elif choice == 2:
            alg = spki.children[0]
            assert alg.children is not None
            alg.children = alg.children[:1]
        else:
            bits.value = b"\0" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))

    return _mutate_cri(rng, keys, change)


def m_length(rng: random.Random, keys: Keys) -> bytes:
    """A length byte anywhere changed, no re-sign (the structure is broken)."""
    root, _ = _base(rng, keys)
    der = bytearray(encode(root))
    positions = [i for i in range(1, len(der) - 1) if der[i - 1] in (0x30, 0x31, 0x04, 0x03, 0x06)]
    pos = rng.choice(positions)
    der[pos] = rng.choice([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, (der[pos] + 1) & 0xFF])
    return pem(bytes(der))


def m_truncate(rng: random.Random, keys: Keys) -> bytes:
    root, _ = _base(rng, keys)
    der = encode(root)
    return pem(der[: rng.randrange(1, len(der))])


def m_trailing(rng: random.Random, keys: Keys) -> bytes:
    root, _ = _base(rng, keys)
    return pem(encode(root) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))


def m_bad_signature(rng: random.Random, keys: Keys) -> bytes:
    root, _ = _base(rng, keys)
    assert root.children is not None
    sig = bytearray(root.children[2].value)
    sig[rng.randrange(1, len(sig))] ^= 1 << rng.randrange(8)
    root.children[2].value = bytes(sig)
    return pem(encode(root))


def m_signature_algorithm(rng: random.Random, keys: Keys) -> bytes:
    """SHA-1/MD5 signatures, mismatched or unknown algorithm identifiers."""
    key = rng.choice([k for k in keys.good if isinstance(k, rsa.RSAPrivateKey)])
    root = parse(build_csr(key))
    if rng.random() < 0.5:  # a real SHA-1 or SHA-224 signature (the builder refuses SHA-1)
        assert root.children is not None
        sha1 = rng.random() < 0.5
        alg = root.children[1]
        assert alg.children is not None
        alg.children[0].value = oid_bytes([1, 2, 840, 113549, 1, 1, 5 if sha1 else 14])
        chosen: hashes.HashAlgorithm = hashes.SHA1() if sha1 else hashes.SHA224()  # noqa: S303
        return pem(resign(root.children[0], key, alg, chosen))
    assert root.children is not None
    alg = root.children[1]
    assert alg.children is not None
    alg.children[0].value = rng.choice(
        [
            oid_bytes([1, 2, 840, 113549, 1, 1, 4]),  # md5WithRSA
            oid_bytes([1, 2, 840, 10045, 4, 3, 2]),  # ecdsa-with-SHA256 on an RSA key
            oid_bytes([1, 3, 101, 112]),  # Ed25519
            oid_bytes([1, 2, 3, 4]),
        ]
    )
    return pem(encode(root))


def m_keys(rng: random.Random, keys: Keys) -> bytes:
    name = rng.choice(sorted(keys.odd))
    key = keys.odd[name]
    return pem(build_csr(key, cn=f"{name}.example.com"))


def m_huge_san(rng: random.Random, keys: Keys) -> bytes:
    count = rng.choice([100, 1000, 5000, 20000])
    kind = rng.randrange(4)
    sans: list[x509.GeneralName]
    if kind == 0:
        sans = [x509.DNSName(f"n{i}.example.com") for i in range(count)]
    elif kind == 1:
        sans = [x509.DNSName("a" * 63 + f".{i}." + "b" * 63 + ".example.com") for i in range(count)]
    elif kind == 2:
        ip = __import__("ipaddress")
        sans = [
            x509.IPAddress(ip.ip_address(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"))
            for i in range(count)
        ]
    else:
        sans = [x509.UniformResourceIdentifier(f"spiffe://x/{i}") for i in range(count)]
    return pem(build_csr(rng.choice(keys.good[:2]), cn=None, sans=sans))


def m_odd_names(rng: random.Random, keys: Keys) -> bytes:
    """Valid DER, odd content: long/empty/wildcard names, emails, URIs, other names."""
    key = rng.choice(keys.good)
    choice = rng.randrange(8)
    if choice == 0:
        return pem(build_csr(key, cn="x" * rng.choice([64, 65, 300, 5000])))
    if choice == 1:
        return pem(build_csr(key, cn=None, sans=[]))
    if choice == 2:
        return pem(build_csr(key, cn="", sans=[x509.DNSName("")]))
    if choice == 3:
        return pem(
            build_csr(
                key,
                sans=[
                    x509.DNSName(
                        rng.choice(["*.example.com", "*.*.example.com", "ex*ample.com", "."])
                    ),
                    x509.RFC822Name._init_without_validation(
                        rng.choice(["a@b.c", "@", "ü@ü.de", "a" * 300 + "@x.y"])
                    ),
                ],
            )
        )
    if choice == 4:
        return pem(
            build_csr(
                key,
                sans=[
                    x509.UniformResourceIdentifier._init_without_validation(
                        rng.choice(["", "http://[::1", "ä://x", "x" * 5000])
                    ),
                    x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x03a@b"),
                ],
            )
        )
    if choice == 5:
        return pem(
            build_csr(
                key,
                sans=[
                    x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
                    x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dir")])),
                ],
            )
        )
    if choice == 6:
        attrs = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "ü" * rng.choice([1, 64, 200]), _validate=False
            ),
            x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4.5"), "unknown attribute"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "x@y.z"),
        ]
        return pem(build_csr(key, attributes=attrs))
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=rng.choice([None, 0, 5])), True),
        (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5.6"), b"\x05\x00"), True),
        (
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None
            ),
            True,
        ),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        (x509.TLSFeature([x509.TLSFeatureType.status_request]), False),
    ]
    return pem(build_csr(key, extensions=[rng.choice(extensions)]))


def m_pem(rng: random.Random, keys: Keys) -> bytes:
    root, _ = _base(rng, keys)
    der = encode(root)
    good = pem(der)
    choice = rng.randrange(8)
    if choice == 0:
        return pem(der, "NEW CERTIFICATE REQUEST")
    if choice == 1:
        return good + good
    if choice == 2:
        return good.replace(b"-----END CERTIFICATE REQUEST-----\n", b"")
    if choice == 3:
        return good[:40] + b"!!!!" + good[44:]
    if choice == 4:
        return (
            "-----BEGIN CERTIFICATE REQUEST-----\nü\n-----END CERTIFICATE REQUEST-----\n".encode()
        )
    if choice == 5:
        return der
    if choice == 6:
        return b""
    return b"\r\n  " + good.replace(b"\n", b"\r\n") + b"  \n"


def m_valid(rng: random.Random, keys: Keys) -> bytes:
    root, _ = _base(rng, keys)
    return pem(encode(root))


MUTATIONS: dict[str, tuple[Mutation, float]] = {
    "valid": (m_valid, 0.05),
    "version": (m_version, 0.05),
    "oid": (m_oid, 0.12),
    "nesting": (m_nesting, 0.07),
    "strings": (m_strings, 0.12),
    "attributes": (m_attributes, 0.08),
    "extension-value": (m_extension_value, 0.1),
    "public-key": (m_spki, 0.06),
    "length": (m_length, 0.07),
    "truncate": (m_truncate, 0.03),
    "trailing": (m_trailing, 0.02),
    "bad-signature": (m_bad_signature, 0.04),
    "signature-algorithm": (m_signature_algorithm, 0.03),
    "key-type-size": (m_keys, 0.04),
    "huge-san": (m_huge_san, 0.01),
    "odd-names": (m_odd_names, 0.08),
    "pem": (m_pem, 0.03),
}


def generate(count: int, seed: int = SEED) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    keys = make_keys()
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    out: list[tuple[str, bytes]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cryptography on over-long names: intended
        for _ in range(count):
            name = rng.choices(names, weights)[0]
            try:
                out.append((name, MUTATIONS[name][0](rng, keys)))
            except Exception as exc:
                # cryptography refused to build it: its error text stands in as the input.
                out.append((f"{name}-unbuildable", f"{type(exc).__name__}".encode()))
    return out


# ---------------------------------------------------------------------------
# Checking an outcome


def names_of(obj: x509.Certificate | x509.CertificateSigningRequest) -> tuple[bytes, set[str]]:
    subject = obj.subject.public_bytes()
    try:
        san = obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = {repr(name) for name in san}
    except x509.ExtensionNotFound:
        sans = set()
    return subject, sans


def check_signed(cert_pem: bytes, csr_bytes: bytes, ca_file: Path, work: Path) -> str | None:
    """None if the certificate is acceptable, else what is wrong."""
    cert_file = work / "leaf.pem"
    cert_file.write_bytes(cert_pem)
    proc = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca_file), str(cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return f"openssl verify -x509_strict: {proc.stdout.strip()} {proc.stderr.strip()}"[:300]
    cert = x509.load_pem_x509_certificate(cert_pem)
    csr = x509.load_pem_x509_csr(csr_bytes.strip())
    if names_of(cert) != names_of(csr):
        return "names differ from the CSR's"
    return None


@dataclass
class Outcome:
    mutation: str
    verdict: str  # signed | refused | crash | bad-certificate
    detail: str


def reason_of(line: str) -> str:
    """The first words of a refusal, numbers and quoted parts blanked, for grouping."""
    text = line.removeprefix("akv-issuer: error: ")
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", text)
    return " ".join(text.split()[:9])


def cli_in_process(argv: list[str]) -> tuple[int, str, str]:
    from akv_issuer.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    # Every warning shown, as each run of the real command would show it once.
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # a crash: what the suite is looking for
            import traceback

            traceback.print_exc(file=err)
            return -1, out.getvalue(), f"CRASH {type(exc).__name__}: {exc}\n{err.getvalue()}"
    return code, out.getvalue(), err.getvalue()


def judge(
    mutation: str,
    csr_bytes: bytes,
    code: int,
    stderr: str,
    cert_file: Path,
    ca_file: Path,
    work: Path,
) -> Outcome:
    if code < 0 or "Traceback" in stderr:
        return Outcome(mutation, "crash", stderr[-1500:])
    # A warning the product prints (ResourceWarnings of this process's garbage
    # collector are not the command's).
    if re.search(
        r"^(?!ResourceWarning)\S*Warning: |: (?!ResourceWarning)\w*Warning: ", stderr, re.M
    ):
        return Outcome(mutation, "crash", f"a Python warning on stderr: {stderr[-600:]}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 0:
        if not cert_file.is_file():
            return Outcome(mutation, "crash", "exit 0 without a certificate")
        problem = check_signed(cert_file.read_bytes(), csr_bytes, ca_file, work)
        cert_file.unlink()
        if problem:
            return Outcome(mutation, "bad-certificate", problem)
        return Outcome(mutation, "signed", "")
    if code == 1 and len(lines) == 1 and lines[0].startswith("akv-issuer: error: "):
        return Outcome(mutation, "refused", reason_of(lines[0]))
    return Outcome(mutation, "crash", f"exit {code}: {stderr[-800:]}")


# ---------------------------------------------------------------------------
# The scenario


async def run(
    world: World,
    work: Path,
    *,
    count: int,
    subprocess_sample: int,
    as_requests: int,
    settle_s: float,
) -> dict[str, Any]:
    env = world.env
    t_begin = time.monotonic()
    started = time.monotonic()
    corpus = await asyncio.to_thread(generate, count)
    generate_s = time.monotonic() - started
    folder = Path(tempfile.mkdtemp(prefix="hostile-", dir=work))
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(env.ca_pem)
    azure = env.emulator.env.azure_environ()
    base_argv = [
        "sign",
        "--vault-url",
        env.emulator.env.vault_url,
        "--key-name",
        env.ca_name,
        "--tls-ca-file",
        env.emulator.env.ca_file,
    ]
    env.emulator.admin.clear_faults()
    # The corpus on disk, judged by worker processes (one per core) that each
    # call the CLI's main() in-process for their share.
    await asyncio.to_thread(_write_corpus, folder, corpus)
    workers = max(1, min(os.cpu_count() or 1, 4))
    cli_started = time.monotonic()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.chaos.hostile",
            str(folder),
            str(w),
            str(workers),
            str(len(corpus)),
            *base_argv,
            env={**os.environ, **azure, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for w in range(workers)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"hostile worker failed: {err.decode(errors='replace')[-2000:]}")
    outcomes = await asyncio.to_thread(_read_verdicts, folder, len(corpus))
    cli_s = time.monotonic() - cli_started

    # A sample through the real command.
    rng = random.Random(SEED + 1)
    sample = rng.sample(range(len(corpus)), k=min(subprocess_sample, len(corpus)))
    sub_outcomes: list[Outcome] = []
    for index in sample:
        mutation, data = corpus[index]
        csr_file = folder / f"sub-{index}.pem"
        cert_file = folder / f"sub-{index}.crt"
        csr_file.write_bytes(data)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "akv_issuer.cli.main",
            *base_argv,
            "--csr",
            str(csr_file),
            "--out",
            str(cert_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **azure},
        )
        _, err_bytes = await proc.communicate()
        code = proc.returncode if proc.returncode is not None else -1
        found = judge(
            mutation, data, code, err_bytes.decode(errors="replace"), cert_file, ca_file, folder
        )
        # The same verdict as in-process (the command is the same code).
        same = found.verdict == outcomes[index].verdict
        sub_outcomes.append(
            found
            if same
            else Outcome(mutation, "crash", f"subprocess {found} vs in-process {outcomes[index]}")
        )

    cr_row = await as_certificate_requests(world, corpus, as_requests, settle_s)

    by_mutation: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    for o in outcomes:
        by_mutation.setdefault(o.mutation, Counter())[o.verdict] += 1
        if o.verdict == "refused":
            reasons[o.detail] += 1
    crashes = [o for o in outcomes + sub_outcomes if o.verdict in ("crash", "bad-certificate")]
    detail = {
        "count": len(corpus),
        "seed": SEED,
        "generate_s": round(generate_s, 1),
        "cli_in_process_s": round(cli_s, 1),
        "cli_ms_per_csr": round(cli_s * 1000 / max(1, len(corpus)), 2),
        "by_mutation": {
            name: {
                "tried": sum(c.values()),
                "signed": c["signed"],
                "refused": c["refused"],
                "crash": c["crash"] + c["bad-certificate"],
            }
            for name, c in sorted(by_mutation.items())
        },
        "reasons": dict(reasons.most_common()),
        "crashes": [f"{o.mutation}: {o.detail}" for o in crashes[:20]],
        "subprocess_sample": len(sub_outcomes),
        "requests": cr_row.pop("detail"),
    }
    signed = sum(1 for o in outcomes if o.verdict == "signed")
    refused = sum(1 for o in outcomes if o.verdict == "refused")
    return {
        "scenario": "hostile-csrs",
        "created": len(corpus) + cr_row["created"],
        "issued": signed + cr_row["issued"],
        "failed": refused + cr_row["failed"],
        "signed_more_than_once": cr_row["signed_more_than_once"],
        "lost": cr_row["lost"],
        "crashes": len(crashes) + cr_row["crashes"],
        "recover_s": None,
        "rss_mib_before": cr_row["rss_mib_before"],
        "rss_mib_after": cr_row["rss_mib_after"],
        "duration_s": round(time.monotonic() - t_begin, 1),
        "cli": {
            "tried": len(corpus),
            "signed": signed,
            "refused": refused,
            "crashes": len(crashes),
        },
        "as_requests": {k: v for k, v in cr_row.items()},
        "detail": detail,
    }


async def as_certificate_requests(
    world: World, corpus: list[tuple[str, bytes]], count: int, settle_s: float
) -> dict[str, Any]:
    """A sample (every kind of mutation) as CertificateRequests through one replica:
    each must end Issued (a good certificate) or Failed with a documented reason;
    the controller's CPU and RSS per bad CSR."""
    from bench.chaos.world import FAST_LEASE, account

    env = world.env
    rng = random.Random(SEED + 2)
    by_kind: dict[str, list[int]] = {}
    for index, (mutation, _) in enumerate(corpus):
        by_kind.setdefault(mutation, []).append(index)
    chosen: list[int] = []
    while len(chosen) < min(count, len(corpus)):
        for indices in by_kind.values():
            if indices and len(chosen) < count:
                chosen.append(indices.pop(rng.randrange(len(indices))))
        if not any(by_kind.values()):
            break
    namespace = await env.namespace("chaos-hostile")
    ref = await env.create_issuer(namespace)
    env.emulator.admin.set_faults({"throttle": {"preset": "azure"}})
    world.add_replica("hostile-r0", 8, FAST_LEASE)
    world.start_supervisor()
    try:
        leader = await world.wait_leader(90)
        assert leader.controller is not None
        controller = leader.controller
        await env.wait_issuers_checked(controller, 1, wait_s=60)
        # What the API server refuses (an empty spec.request, an object over
        # etcd's size limit) never reaches the controller: counted apart.
        api_refused: list[str] = []

        async def create(index: int) -> int | None:
            try:
                await env.create_requests(
                    namespace,
                    [f"hostile-{index}"],
                    [base64.b64encode(corpus[index][1]).decode()],
                    ref,
                )
            except ApiError as exc:
                api_refused.append(f"{corpus[index][0]}: {exc.status.code} {exc}"[:200])
                return None
            return index

        created = await bounded(16, [functools.partial(create, i) for i in chosen])
        chosen = [i for i in created if i is not None]
        names = [f"hostile-{i}" for i in chosen]
        await asyncio.sleep(1.0)
        env.emulator.admin.clear_sign_log()
        rss_before = controller.rss_mib()
        cpu0 = controller.cpu_seconds()
        hwm0 = controller.hwm_mib()
        await approve_all(env, namespace, names)
        settled = await settle(env, namespace, names, settle_s)
        cpu = controller.cpu_seconds() - cpu0
        rss_after = controller.rss_mib()
        hwm = controller.hwm_mib()
        restarts = leader.restarts
        log_text = controller.log_path.read_text(errors="replace")
        sign_log = env.emulator.admin.sign_log()
    finally:
        await world.stop_replicas()
    states = settled.by_state()
    # Accounting for the valid ones (issued) as in the other scenarios.
    acc = account(settled, names, sign_log, env.ca_pem)
    undocumented = []
    bad = []
    ca_file = env.work / "hostile-ca.pem"
    ca_file.write_bytes(env.ca_pem)
    for name, index in zip(names, chosen, strict=True):
        state, message = request_state(settled.objects.get(name, {}))
        if state == "failed" and not message.startswith(DOCUMENTED_PREFIXES):
            undocumented.append(f"{corpus[index][0]}: {message[:200]}")
        if state == "issued":
            status = settled.objects[name]["status"]
            problem = check_signed(
                base64.b64decode(status["certificate"]), corpus[index][1], ca_file, env.work
            )
            if problem:
                bad.append(f"{corpus[index][0]}: {problem}")
    tracebacks = log_text.count("Traceback")
    refused = len(states["failed"]) + len(states["denied"])
    with contextlib.suppress(Exception):
        await retrying("cleanup", functools.partial(env.delete_requests, namespace), wait_s=30)
    return {
        "created": len(names),
        "issued": len(states["issued"]),
        "failed": refused,
        "lost": acc["lost"],
        "signed_more_than_once": acc["signed_more_than_once"],
        "crashes": len(bad) + len(undocumented) + tracebacks + restarts,
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_after": round(rss_after, 1),
        "detail": {
            "refused_by_the_api_server": api_refused[:20],
            "refused_by_the_api_server_count": len(api_refused),
            "controller_tracebacks": tracebacks,
            "controller_restarts": restarts,
            "undocumented_failures": undocumented[:20],
            "bad_certificates": bad[:20],
            "cpu_ms_per_request": round(cpu * 1000 / max(1, len(names)), 2),
            "rss_mib_growth": round(rss_after - rss_before, 2),
            "hwm_mib_growth": round(hwm - hwm0, 2),
            "reasons": dict(
                Counter(
                    reason_of(request_state(settled.objects.get(n, {}))[1])
                    for n in states["failed"]
                ).most_common(30)
            ),
        },
    }


def _write_corpus(folder: Path, corpus: list[tuple[str, bytes]]) -> None:
    for index, (mutation, data) in enumerate(corpus):
        (folder / f"{index}.csr").write_bytes(data)
        (folder / f"{index}.kind").write_text(mutation)


def _read_verdicts(folder: Path, count: int) -> list[Outcome]:
    out = []
    for index in range(count):
        verdict = json.loads((folder / f"{index}.verdict").read_text())
        out.append(Outcome(verdict["mutation"], verdict["verdict"], verdict["detail"]))
    return out


def worker(folder: Path, index: int, workers: int, count: int, base_argv: list[str]) -> None:
    """Judge every ``workers``-th CSR of the corpus in ``folder`` from ``index``."""
    ca_file = folder / "ca.pem"
    scratch = folder / f"worker-{index}"
    scratch.mkdir(exist_ok=True)
    for i in range(index, count, workers):
        csr_file = folder / f"{i}.csr"
        cert_file = scratch / "cert.pem"
        cert_file.unlink(missing_ok=True)
        data = csr_file.read_bytes()
        mutation = (folder / f"{i}.kind").read_text()
        code, _, err = cli_in_process([*base_argv, "--csr", str(csr_file), "--out", str(cert_file)])
        outcome = judge(mutation, data, code, err, cert_file, ca_file, scratch)
        (folder / f"{i}.verdict").write_text(
            json.dumps(
                {"mutation": outcome.mutation, "verdict": outcome.verdict, "detail": outcome.detail}
            )
        )


if __name__ == "__main__":
    worker(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
