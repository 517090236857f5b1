"""Pure helpers of the runtime: log redaction, bind addresses, lease timings."""

import io
import json
import logging

import pytest

from akv_issuer.runtime.leader import LeaderElectionConfig
from akv_issuer.runtime.logs import JSONFormatter, RedactingFilter, redact
from akv_issuer.runtime.servers import parse_bind_address

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    "leak",
    [
        f"Authorization: Bearer {JWT}",
        f"token={JWT}",
        "client_secret=s3cr3t-Value_1",
        '{"client_assertion": "abc.def.ghi"}',
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----",
    ],
)
def test_secrets_never_reach_the_log_output(leak: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"redaction-test-{abs(hash(leak))}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("request failed: %s", leak)
    try:
        raise RuntimeError(f"boom {leak}")
    except RuntimeError:
        logger.exception("with traceback")
    output = stream.getvalue()
    for secret in (
        JWT,
        "s3cr3t-Value_1",
        "abc.def.ghi",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "MHcCAQEEIB",
    ):
        assert secret not in output
    for line in output.splitlines():
        assert json.loads(line)["msg"]


@pytest.mark.parametrize(
    "leak",
    [
        "BEARER hunter2value",
        "Client_Secret: hunter2value",
        "PASSWORD=hunter2value",
        "x-ms-Token = hunter2value",
        "client_\u017fecret=hunter2value",  # a long s, which the pattern's IGNORECASE folds
    ],
)
def test_redaction_is_caseless_where_the_patterns_are(leak: str) -> None:
    assert "hunter2value" not in redact(leak)


def test_redaction_leaves_ordinary_text_alone() -> None:
    text = "Issuer team-a/ca is not ready: CAKeyMismatch: key version 0123abcd"
    assert redact(text) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9", ("::1", 9))],
)
def test_bind_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_bind_address(value) == expected


@pytest.mark.parametrize("value", ["0", ""])
def test_zero_bind_address_disables_the_server(value: str) -> None:
    assert parse_bind_address(value) is None


def test_lease_timings_must_leave_room_for_a_handover() -> None:
    LeaderElectionConfig("ns", "lease", "me")  # the 15 s / 10 s / 2 s defaults
    with pytest.raises(ValueError, match="lease_duration"):
        LeaderElectionConfig("ns", "lease", "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="lease_duration"):
        LeaderElectionConfig("ns", "lease", "me", renew_deadline=2, retry_period=2)
