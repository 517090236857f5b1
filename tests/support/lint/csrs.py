"""PKCS#10 requests for the lint matrix: each key type a user brings, each SAN type."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("rsa", "ec", "ed25519")


@dataclass(frozen=True)
class SANs:
    """A request's subject common name (empty: an empty subject) and SANs."""

    common_name: str = ""
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()

    def general_names(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in self.ips]
        names += [x509.RFC822Name(e) for e in self.emails]
        names += [x509.UniformResourceIdentifier(u) for u in self.uris]
        return names

    @property
    def spiffe_uris(self) -> tuple[str, ...]:
        return tuple(u for u in self.uris if u.startswith("spiffe://"))

    @property
    def wildcard_names(self) -> tuple[str, ...]:
        return tuple(d for d in self.dns if d.startswith("*."))

    @property
    def single_label_names(self) -> tuple[str, ...]:
        return tuple(d for d in self.dns if "." not in d)


DNS = SANs("app.example.com", dns=("app.example.com",))
# One request per SAN type, so that a waiver for one type names exactly its case.
SAN_TYPES: dict[str, SANs] = {
    "dns": DNS,
    # A Service's names as cert-manager Certificates list them (short ones first).
    "service": SANs(
        "app.default.svc",
        dns=("app", "app.default", "app.default.svc", "app.default.svc.cluster.local"),
    ),
    "wildcard": SANs("*.apps.example.com", dns=("*.apps.example.com", "apps.example.com")),
    "ip": SANs("10.0.0.1", ips=("10.0.0.1", "2001:db8::1")),
    "email": SANs("Ops Team", emails=("ops@example.com",)),
    "uri": SANs("app.example.com", dns=("app.example.com",), uris=("https://app.example.com/",)),
    # As cert-manager's csi-driver-spiffe and SPIFFE X.509-SVIDs ask: no subject, one URI.
    "spiffe": SANs(uris=("spiffe://cluster.local/ns/default/sa/app",)),
}


def private_key(key_type: str) -> Any:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(key_type)


def csr_pem(key_type: str, sans: SANs = DNS, *, is_ca: bool = False) -> bytes:
    """A CSR for a new ``key_type`` key with ``sans`` (SAN extension critical when
    the subject is empty, as RFC 5280 4.2.1.6 requires)."""
    key = private_key(key_type)
    subject = (
        [x509.NameAttribute(NameOID.COMMON_NAME, sans.common_name)] if sans.common_name else []
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    names = sans.general_names()
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=not sans.common_name
        )
    if is_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    algorithm = None if key_type == "ed25519" else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)
