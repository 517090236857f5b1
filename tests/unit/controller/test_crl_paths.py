"""Which paths of the (unauthenticated) CRL endpoint name an issuer (pure)."""

import pytest

from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.revocation.crl_server import crl_path, parse_path


@pytest.mark.parametrize(
    "key",
    [IssuerKey("Issuer", "team-a", "ca"), IssuerKey("ClusterIssuer", "", "root.example")],
)
def test_paths_round_trip(key: IssuerKey) -> None:
    assert parse_path(crl_path(key)) == key


@pytest.mark.parametrize(
    "path",
    [
        "/crl/issuer/team-a/ca",  # no .crl
        "/crl/issuer/ca.crl",  # namespace missing
        "/crl/clusterissuer/a/b.crl",
        "/crl/issuer/../etc/passwd.crl",
        "/crl/issuer/Team-A/ca.crl",  # not a Kubernetes name
        "/crl/clusterissuer/" + "x" * 300 + ".crl",
        "/crl/clusterissuer/-root.crl",
        "/crl/other/ns/ca.crl",
        "/metrics",
    ],
)
def test_anything_else_names_no_issuer(path: str) -> None:
    assert parse_path(path) is None
