"""Key material and kubeconfig files for the dev cluster."""

from __future__ import annotations

import base64
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_devtls import CLOCK_SKEW, server_certificate
from akv_issuer.pki import build_root_ca

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The first address of the service range is the in-cluster `kubernetes`
# Service; it is in the serving certificate so in-cluster style clients verify.
_KUBERNETES_SERVICE_IP = "10.0.0.1"


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (keys, tokens, kubeconfigs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class ClusterPKI:
    ca_file: Path
    serving_cert_file: Path
    serving_key_file: Path
    sa_signing_key_file: Path
    sa_public_key_file: Path


def create_pki(folder: Path, extra_names: tuple[str, ...] = ()) -> ClusterPKI:
    """A throwaway CA, the API server's serving certificate, and SA token keys.

    extra_names are more DNS names/IPs for the serving certificate (a cluster
    with a node serves on the host end of the node's link, akv_devcluster.node).
    """
    issued = datetime.datetime.now(datetime.UTC) - CLOCK_SKEW
    validity = datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_plan = build_root_ca(
        ca_key.public_key(), "akv-devcluster CA", lifetime=validity, now=issued, path_length=0
    )
    ca_cert = ca_plan.builder.sign(ca_key, hashes.SHA256())
    serving_key, serving_cert = server_certificate(
        ca_key,
        ca_cert,
        [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            _KUBERNETES_SERVICE_IP,
            *extra_names,
        ],
        common_name="kube-apiserver",
        lifetime=validity,
        now=issued,
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = ClusterPKI(
        ca_file=folder / "ca.crt",
        serving_cert_file=folder / "apiserver.crt",
        serving_key_file=folder / "apiserver.key",
        sa_signing_key_file=folder / "sa.key",
        sa_public_key_file=folder / "sa.pub",
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.serving_cert_file.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    write_private(pki.serving_key_file, _pem_key(serving_key))
    write_private(pki.sa_signing_key_file, _pem_key(sa_key))
    pki.sa_public_key_file.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # The CA key is not kept: nothing else is ever signed by it.
    return pki


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    ca_pem: bytes,
    user: str,
    token: str,
    namespace: str | None = None,
) -> Path:
    """A single-context kubeconfig with the CA inline, so it can be copied alone."""
    context: dict[str, str] = {"cluster": "akv-devcluster", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "akv-devcluster",
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
        "preferences": {},
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path
