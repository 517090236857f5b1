"""Condition helpers: what `kubectl get` and cert-manager read from our status."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from akv_issuer.controller import api

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _ready(status: str, reason: str, generation: int, now: datetime) -> dict[str, Any]:
    return api.make_condition(
        api.CONDITION_READY,
        status,
        reason,
        f"{reason} message",
        observed_generation=generation,
        now=now,
    )


def test_make_condition_shape() -> None:
    condition = _ready("False", api.IssuerReason.KEY_NOT_FOUND, 2, T0)
    assert condition == {
        "type": "Ready",
        "status": "False",
        "reason": "KeyNotFound",
        "message": "KeyNotFound message",
        "lastTransitionTime": "2025-06-01T12:00:00Z",
        "observedGeneration": 2,
    }


def test_make_condition_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="Maybe"):
        _ready("Maybe", api.IssuerReason.CHECKED, 1, T0)


def test_transition_time_only_moves_when_status_changes() -> None:
    first = api.set_condition(None, _ready("False", api.IssuerReason.CHECKING, 1, T0))
    later = T0 + timedelta(minutes=5)
    same_status = api.set_condition(first, _ready("False", api.IssuerReason.FORBIDDEN, 1, later))
    assert same_status[0]["lastTransitionTime"] == "2025-06-01T12:00:00Z"
    assert same_status[0]["reason"] == "Forbidden"
    flipped = api.set_condition(same_status, _ready("True", api.IssuerReason.CHECKED, 1, later))
    assert flipped[0]["lastTransitionTime"] == "2025-06-01T12:05:00Z"
    assert len(flipped) == 1


def test_set_condition_keeps_other_types() -> None:
    other = {"type": "Custom", "status": "True"}
    result = api.set_condition([other], _ready("True", api.IssuerReason.CHECKED, 1, T0))
    assert [c["type"] for c in result] == ["Custom", "Ready"]
    assert api.find_condition(result, "Custom") == other
    assert api.find_condition(result, "Missing") is None


@pytest.mark.parametrize(
    ("status", "observed", "generation", "ready"),
    [
        ("True", 3, 3, True),
        ("True", 2, 3, False),  # describes an older spec
        ("False", 3, 3, False),
        ("Unknown", 3, 3, False),
    ],
)
def test_is_issuer_ready(status: str, observed: int, generation: int, ready: bool) -> None:
    issuer = {
        "metadata": {"generation": generation},
        "status": {"conditions": [_ready(status, api.IssuerReason.CHECKED, observed, T0)]},
    }
    assert api.is_issuer_ready(issuer) is ready


def test_issuer_without_status_is_not_ready() -> None:
    assert api.is_issuer_ready({"metadata": {"generation": 1}}) is False


def test_status_round_trips_the_ca_pem() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    status = api.build_issuer_status(conditions=[], ca_certificate_pem=pem)
    assert base64.b64decode(status["caCertificate"]) == pem
    assert api.ca_certificate_from_status(status) == pem
    assert api.ca_certificate_from_status({}) is None
    assert api.ca_certificate_from_status(None) is None


def test_status_omits_unknown_fields() -> None:
    assert api.build_issuer_status(conditions=[]) == {"conditions": []}


def test_times_are_utc_seconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert api.format_time(datetime(2025, 1, 1, 14, 0, 0, 123, tzinfo=plus_two)) == (
        "2025-01-01T12:00:00Z"
    )
    assert api.parse_time("2025-01-01T12:00:00Z") == datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert api.parse_time("2025-01-01T12:00:00.5Z").microsecond == 500000
    with pytest.raises(ValueError, match="timezone-aware"):
        api.format_time(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        api.parse_time("2025-01-01T12:00:00")


def test_reason_names_are_stable() -> None:
    """Users alert on these strings; renaming one is an API change."""
    assert {r.value for r in api.IssuerReason} >= {
        "Checked",
        "KeyVaultUnreachable",
        "Forbidden",
        "KeyNotFound",
        "KeyDisabled",
        "KeyNotUsable",
        "CASecretNotFound",
        "CAInvalid",
        "CAKeyMismatch",
        "CAExpired",
        "AuthSecretNotFound",
        "InvalidSpec",
    }
    assert [r.value for r in api.CertificateRequestReason] == [
        "Pending",
        "Failed",
        "Issued",
        "Denied",
    ]
