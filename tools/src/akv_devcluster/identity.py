"""ServiceAccount identities with a TokenRequest token and their own kubeconfig.

A controller under test runs as one of these, so it has exactly the RBAC the
deployment manifests grant its ServiceAccount, never the admin's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightkube import AsyncClient
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount, ServiceAccountToken

from akv_devcluster.kubeconfig import write_kubeconfig

_FIELD_MANAGER = "akv-devcluster"


@dataclass(frozen=True)
class Identity:
    namespace: str
    name: str
    token: str
    kubeconfig_path: Path

    @property
    def username(self) -> str:
        """The user name the API server sees, as written in RBAC subjects."""
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def __repr__(self) -> str:
        # Never print the token, even in a failing test's output.
        return f"Identity({self.username!r}, kubeconfig={str(self.kubeconfig_path)!r})"


async def create_identity(
    client: AsyncClient,
    *,
    namespace: str,
    name: str,
    server_url: str,
    ca_pem: bytes,
    kubeconfig_dir: Path,
    expiration_seconds: int = 3600,
) -> Identity:
    """Ensure ServiceAccount namespace/name exists, mint a token, write a kubeconfig."""
    await client.apply(
        ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)),
        field_manager=_FIELD_MANAGER,
    )
    # Not a long-lived Secret token: TokenRequest is how kubelets hand tokens
    # to pods, with an expiry and the API server's audience.
    issued = await client.create(
        ServiceAccountToken(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=expiration_seconds),
        ),
        name=name,
        namespace=namespace,
    )
    if issued.status is None or not issued.status.token:
        raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
    path = write_kubeconfig(
        kubeconfig_dir / f"{namespace}.{name}.kubeconfig",
        server_url=server_url,
        ca_pem=ca_pem,
        user=f"{namespace}-{name}",
        token=issued.status.token,
        namespace=namespace,
    )
    return Identity(namespace, name, issued.status.token, path)
