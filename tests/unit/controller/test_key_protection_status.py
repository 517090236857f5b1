"""What an issuer's status, Ready message and audit records say about the key leaving
Key Vault (issue 24), built without I/O from what the check found."""

from __future__ import annotations

import datetime as dt

from akv_issuer.controller.core import KeyProtection
from akv_issuer.controller.issuers.status import key_attestation_status
from akv_issuer.keyvault import AttestationRoot, AttestationSummary

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SUMMARY = AttestationSummary(
    key_id="https://h.managedhsm.azure.net/keys/ca/0123",
    format_version="1.0.0",
    hsm_platform="2",
    private_key_attestation_sha256="aa" * 32,
    public_key_attestation_sha256="bb" * 32,
    certificates=3,
    roots=(AttestationRoot("CN=Vendor Root", "cc" * 32),),
)


def test_a_vault_key_has_no_attestation_status() -> None:
    assert key_attestation_status(None) is None
    assert key_attestation_status(KeyProtection(checked_at=NOW)) is None
    assert not KeyProtection(checked_at=NOW).leaves_vault


def test_a_checked_attestation_is_summarised() -> None:
    protection = KeyProtection(attestation=SUMMARY, checked_at=NOW)
    assert not protection.leaves_vault
    assert key_attestation_status(protection) == {
        "checkTime": "2026-12-01T12:00:00Z",
        "keyID": SUMMARY.key_id,
        "result": "Checked",
        "message": (
            "names this key version, attests its public key, not exportable, no release "
            "policy; compare the digests and root fingerprints with Microsoft's attestation "
            "validator (docs/api.md, Key protection)"
        ),
        "privateKeyAttestationSHA256": "aa" * 32,
        "publicKeyAttestationSHA256": "bb" * 32,
        "certificates": 3,
        "rootCertificates": [{"subject": "CN=Vendor Root", "sha256": "cc" * 32}],
        "formatVersion": "1.0.0",
        "hsmPlatform": "2",
    }
    assert protection.audit_fields() == {
        "exportable": False,
        "release_policy": False,
        "attestation": {
            "result": "Checked",
            "key_id": SUMMARY.key_id,
            "private_key_attestation_sha256": "aa" * 32,
            "root_sha256": ["cc" * 32],
        },
    }


def test_a_failed_attestation_let_through_is_recorded() -> None:
    protection = KeyProtection(
        exportable=True, attestation_error="the attestation says it is exportable", checked_at=NOW
    )
    assert protection.leaves_vault
    assert key_attestation_status(protection) == {
        "checkTime": "2026-12-01T12:00:00Z",
        "result": "Failed",
        "message": "the attestation says it is exportable",
    }
    assert protection.audit_fields()["attestation"] == {
        "result": "Failed",
        "message": "the attestation says it is exportable",
    }
    assert protection.audit_fields()["exportable"] is True
