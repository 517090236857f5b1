"""Every cert-manager usage string and what it becomes in X.509."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from akv_issuer.pki import KNOWN_USAGES, PolicyError, resolve_usages

KEY_USAGES = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
}
EXTENDED_KEY_USAGES = {
    "any": "2.5.29.37.0",
    "server auth": "1.3.6.1.5.5.7.3.1",
    "client auth": "1.3.6.1.5.5.7.3.2",
    "code signing": "1.3.6.1.5.5.7.3.3",
    "email protection": "1.3.6.1.5.5.7.3.4",
    "s/mime": "1.3.6.1.5.5.7.3.4",
    "ipsec end system": "1.3.6.1.5.5.7.3.5",
    "ipsec tunnel": "1.3.6.1.5.5.7.3.6",
    "ipsec user": "1.3.6.1.5.5.7.3.7",
    "timestamping": "1.3.6.1.5.5.7.3.8",
    "ocsp signing": "1.3.6.1.5.5.7.3.9",
    "microsoft sgc": "1.3.6.1.4.1.311.10.3.3",
    "netscape sgc": "2.16.840.1.113730.4.1",
}


def test_known_usages_are_exactly_cert_managers() -> None:
    assert (
        set(KEY_USAGES) | set(EXTENDED_KEY_USAGES) | {"encipher only", "decipher only"}
    ) == KNOWN_USAGES


@pytest.mark.parametrize(("usage", "bit"), KEY_USAGES.items())
def test_key_usages(usage: str, bit: str) -> None:
    resolved = resolve_usages([usage])
    assert resolved.key_usage == {bit}
    assert resolved.extended_key_usage == ()
    extension = resolved.key_usage_extension()
    assert extension is not None
    assert getattr(extension, bit)


@pytest.mark.parametrize("usage", ["encipher only", "decipher only"])
def test_encipher_and_decipher_only_need_key_agreement(usage: str) -> None:
    with pytest.raises(PolicyError, match="require 'key agreement'"):
        resolve_usages([usage])
    extension = resolve_usages([usage, "key agreement"]).key_usage_extension()
    assert extension is not None
    assert getattr(extension, usage.replace(" ", "_"))


@pytest.mark.parametrize(("usage", "oid"), EXTENDED_KEY_USAGES.items())
def test_extended_key_usages(usage: str, oid: str) -> None:
    resolved = resolve_usages([usage])
    assert resolved.key_usage == frozenset()
    assert resolved.key_usage_extension() is None
    assert resolved.extended_key_usage == (ObjectIdentifier(oid),)


def test_extended_key_usages_keep_order_without_duplicates() -> None:
    resolved = resolve_usages(["client auth", "email protection", "s/mime", "server auth"])
    assert resolved.extended_key_usage_extension() == x509.ExtendedKeyUsage(
        [
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.EMAIL_PROTECTION,
            ExtendedKeyUsageOID.SERVER_AUTH,
        ]
    )


@pytest.mark.parametrize("usage", ["Server Auth", "serverAuth", "", "digital-signature"])
def test_unknown_usages_are_named(usage: str) -> None:
    with pytest.raises(PolicyError) as info:
        resolve_usages(["digital signature", usage])
    assert info.value.reason == f"unknown usage {usage!r}"
