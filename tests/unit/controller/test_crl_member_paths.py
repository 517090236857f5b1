"""Where a CA pool member's CRL is served (pure): below its issuer's path, never a path
that names another issuer."""

import pytest

from akv_issuer.controller.api.spec import member_crl_url
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.revocation.crl_server import (
    crl_path,
    member_crl_path,
    parse_member_path,
    parse_path,
)


@pytest.mark.parametrize(
    "key",
    [IssuerKey("Issuer", "team-a", "ca"), IssuerKey("ClusterIssuer", "", "root.example")],
)
def test_member_paths_round_trip_and_match_the_spec_url(key: IssuerKey) -> None:
    path = member_crl_path(key, "westeurope")
    assert parse_member_path(path) == (key, "westeurope")
    assert parse_path(path) is None  # never taken for an issuer's own CRL
    assert member_crl_url(f"http://crl.example{crl_path(key)}", "westeurope") == (
        f"http://crl.example{path}"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/crl/clusterissuer/pool/members/b",  # no .crl
        "/crl/clusterissuer/pool/members/B.crl",  # not a member name
        "/crl/clusterissuer/pool/members/.crl",
        "/crl/clusterissuer/a/members/b/members/c.crl",
        "/crl/issuer/pool/members/b.crl",  # namespace missing
        "/crl/clusterissuer/../members/b.crl",
        "/crl/clusterissuer/pool.crl",
    ],
)
def test_anything_else_names_no_member(path: str) -> None:
    assert parse_member_path(path) is None
