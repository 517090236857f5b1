"""The benchmarks' CSRs: distinct EC P-256 requests for ``app-N.bench.example.com``.

A module of its own so that ``bench.micro`` (run under callgrind) gets them
without importing the harness (``bench.env``: lightkube, the dev cluster)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def csr_pems(count: int) -> list[bytes]:
    """``count`` distinct CSRs, PEM."""
    pems = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"app-{i}.bench.example.com"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        pems.append(csr.public_bytes(serialization.Encoding.PEM))
    return pems
