"""The session's log scan (tests/support/secret_scan.py) finds what it must.

The scan runs at the end of every test session over the controllers' logs and
passes when they are clean; this shows it is not passing for want of looking:
a planted secret, an emulator access token, a JWT and a private key are all
found, ordinary log lines (an audit record with its serial) are not.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.secret_scan import SessionSecrets, scan_text

SECRET = "Zq8-uV1Lr2kQ_s3cretFromTheEmulator"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXBhcnQ"
AUDIT = json.dumps(
    {
        "ts": "2026-01-01T00:00:00.000+00:00",
        "logger": "akv_issuer.audit",
        "msg": "certificate issued: serial 5f3a9c1e77d0b2a4c6e8f0a1b3c5d7e9f1a3b5c7",
        "audit": {"event": "issued", "serial": "5f3a9c1e77d0b2a4c6e8f0a1b3c5d7e9f1a3b5c7"},
    }
)


def test_clean_lines_pass() -> None:
    text = "\n".join(
        [
            AUDIT,
            "2026-01-01 INFO akv_issuer: token request failed: Bearer [REDACTED]",
            "certificaterequests ns/cr issued by Issuer ns/ca (serial 1a2b3c)",
        ]
    )
    assert scan_text(text, [SECRET]) == []


def test_a_planted_secret_and_credential_shapes_are_found(tmp_path: Path) -> None:
    log = tmp_path / "controller-0.log"
    log.write_text(
        "\n".join(
            [
                AUDIT,
                f"debug: client_secret was {SECRET}",
                "sending Authorization akv-emu.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                f"assertion {JWT}",
                "-----BEGIN EC PRIVATE KEY-----",
            ]
        )
    )
    session = SessionSecrets()
    session.add_log(log)
    session.add_source(lambda: [SECRET])
    found = session.scan()
    assert [(f.line, f.what) for f in found] == [
        (2, "known secret Zq8-..."),
        (3, "emulator access token"),
        (4, "JWT"),
        (5, "private key"),
    ]
    assert SECRET not in "\n".join(map(str, found)), "a finding must not repeat the secret"


def test_short_values_are_not_taken_for_secrets() -> None:
    assert scan_text("issuer ca ready", ["ca", ""]) == []
