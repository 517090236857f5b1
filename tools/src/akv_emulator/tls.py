"""The emulator's own TLS CA and server certificate, kept in its state directory."""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_devtls import CLOCK_SKEW, server_certificate, subject_alt_name
from akv_issuer.pki import build_root_ca

DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TLSFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start rather than chmod-ed after the fact.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _current(cert_file: Path, ca_file: Path, names: list[str]) -> bool:
    """True when the stored server certificate is still usable for all requested names."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except (OSError, ValueError):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - now < datetime.timedelta(days=1):
        return False
    if ca.not_valid_after_utc - now < datetime.timedelta(days=1) or cert.issuer != ca.subject:
        return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(entry in present for entry in subject_alt_name(names))


def ensure_tls(state_dir: Path, extra_names: list[str] | None = None) -> TLSFiles:
    """Create (or reuse) a CA and a server certificate for the loopback names plus extra_names."""
    names = list(dict.fromkeys([*DEFAULT_NAMES, *(extra_names or [])]))
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server-key.pem")
    if _current(files.cert_file, files.ca_file, names) and files.key_file.exists():
        return files

    issued = datetime.datetime.now(datetime.UTC) - CLOCK_SKEW
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_plan = build_root_ca(
        ca_key.public_key(),
        "akv-emulator local CA",
        lifetime=datetime.timedelta(days=365),
        now=issued,
        path_length=0,
    )
    ca_cert = ca_plan.builder.sign(ca_key, hashes.SHA256())
    server_key, server_cert = server_certificate(
        ca_key,
        ca_cert,
        names,
        common_name="akv-emulator",
        lifetime=datetime.timedelta(days=90),
        now=issued,
    )
    # The CA key is not kept: the server certificate is re-issued with a fresh CA when needed.
    _write_private(
        files.key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files
