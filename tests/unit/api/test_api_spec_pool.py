"""``spec.pool`` (CA pools): what the parser accepts, what it refuses and how it names it.

A single-key issuer is a pool of one and reads exactly as before; a pool's members read
as single-key issuers of their own keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from akv_issuer.controller import api

OWN = {"keyVaultBaseURL": "https://weu.vault.azure.net/", "keyName": "ca-weu"}


def pool(*members: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**OWN, "pool": {"members": list(members), **fields}}


def member(name: str, vault: str = "neu", key: str = "ca-neu") -> dict[str, Any]:
    return {"name": name, "keyVaultBaseURL": f"https://{vault}.vault.azure.net", "keyName": key}


def test_a_single_key_issuer_is_a_pool_of_one() -> None:
    spec = api.parse_issuer_spec(dict(OWN))
    assert spec.pool is None
    ((name, own),) = spec.member_specs()
    assert name == "primary"
    assert own == spec


def test_members_read_as_single_key_issuers_of_their_own_keys() -> None:
    spec = api.parse_issuer_spec(
        pool(
            member("neu"),
            {
                "name": "hsm",
                "keyVaultBaseURL": "https://pki.managedhsm.azure.net/",
                "keyName": "ca-hsm",
                "keyVersion": "",
                "caSource": {"secret": {"name": "hsm-chain"}},
            },
            primaryName="weu",
            onInvalidMember="Exclude",
            retryAfter="2m",
        )
    )
    assert spec.pool is not None
    assert spec.pool.exclude_invalid
    assert spec.pool.retry_after == dt.timedelta(minutes=2)
    names = [name for name, _ in spec.member_specs()]
    assert names == ["weu", "neu", "hsm"]
    _, neu = spec.member_specs()[1]
    assert (neu.key_vault_base_url, neu.key_name, neu.key_version) == (
        "https://neu.vault.azure.net",
        "ca-neu",
        None,
    )
    # The CA secret defaults to the member's key name in the member's vault.
    assert neu.ca_source == api.KeyVaultSecretCA("https://neu.vault.azure.net", "ca-neu", None)
    _, hsm = spec.member_specs()[2]
    assert hsm.ca_source == api.KubernetesSecretCA("hsm-chain")
    # Everything else (policy, auth) is the issuer's.
    assert neu.policy == spec.policy
    assert neu.auth == spec.auth
    assert neu.pool is None


def test_each_member_has_a_crl_url_of_its_own() -> None:
    spec = api.parse_issuer_spec(
        {
            **pool(member("neu")),
            "crl": {"enabled": True, "url": "http://crl.example/crl/clusterissuer/pool.crl"},
        }
    )
    own, neu = (s for _, s in spec.member_specs())
    assert own.crl_urls == ("http://crl.example/crl/clusterissuer/pool.crl",)
    assert neu.crl_urls == ("http://crl.example/crl/clusterissuer/pool/members/neu.crl",)


def test_defaults() -> None:
    spec = api.parse_issuer_spec(pool(member("neu")))
    assert spec.pool is not None
    assert spec.pool.primary_name == "primary"
    assert spec.pool.on_invalid_member == "Fail"
    assert spec.pool.retry_after == dt.timedelta(seconds=30)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (pool(), "pool.members", "lists no member"),
        (
            pool(member("neu"), member("neu", "sec", "ca-sec")),
            "pool.members[1].name",
            "another member",
        ),
        (pool(member("primary")), "pool.members[0].name", "pool.primaryName"),
        (pool(member("Neu")), "pool.members[0].name", "DNS label"),
        (pool({"name": "neu", "keyName": "k"}), "pool.members[0].keyVaultBaseURL", "is required"),
        (pool(member("neu"), retryAfter="500ms"), "pool.retryAfter", "at least 1s"),
        (pool(member("neu"), onInvalidMember="Ignore"), "pool.onInvalidMember", "not one of"),
        (
            {**pool(member("neu")), "caRenewal": {"automatic": True}},
            "caRenewal.automatic",
            "pool-member",
        ),
        ({**pool(member("neu")), "reissue": {"onCAChange": True}}, "reissue.onCAChange", "pool"),
    ],
)
def test_a_wrong_pool_names_its_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(api.SpecError) as caught:
        api.parse_issuer_spec(spec)
    assert caught.value.field == field
    assert words in str(caught.value)
