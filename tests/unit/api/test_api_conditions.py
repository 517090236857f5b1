"""Condition helpers: what `kubectl get` and cert-manager read from our status."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from akv_issuer.controller import api
from akv_issuer.controller.core import IssuerView

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


def _set_condition(
    conditions: Iterable[Mapping[str, Any]] | None, new: dict[str, Any]
) -> list[dict[str, Any]]:
    """Replace the condition of ``new``'s type as the issuer reconciler writes it:
    lastTransitionTime is kept while the status stays the same."""
    given = [dict(c) for c in conditions or ()]
    old = api.find_condition((api.Condition.from_dict(c) for c in given), new["type"])
    if old is not None and old.status == new["status"] and old.last_transition_time:
        new = {**new, "lastTransitionTime": old.last_transition_time}
    return [c for c in given if c.get("type") != new["type"]] + [new]


def _ca_certificate_from_status(status: Mapping[str, Any] | None) -> bytes | None:
    """The CA PEM a consumer reads from ``status.caCertificate`` (None when absent)."""
    encoded = (status or {}).get("caCertificate")
    if not encoded:
        return None
    return base64.b64decode(encoded, validate=True)


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
    first = _set_condition(None, _ready("False", api.IssuerReason.CHECKING, 1, T0))
    later = T0 + timedelta(minutes=5)
    same_status = _set_condition(first, _ready("False", api.IssuerReason.FORBIDDEN, 1, later))
    assert same_status[0]["lastTransitionTime"] == "2025-06-01T12:00:00Z"
    assert same_status[0]["reason"] == "Forbidden"
    flipped = _set_condition(same_status, _ready("True", api.IssuerReason.CHECKED, 1, later))
    assert flipped[0]["lastTransitionTime"] == "2025-06-01T12:05:00Z"
    assert len(flipped) == 1


def test_set_condition_keeps_other_types() -> None:
    other = {"type": "Custom", "status": "True"}
    result = _set_condition([other], _ready("True", api.IssuerReason.CHECKED, 1, T0))
    assert [c["type"] for c in result] == ["Custom", "Ready"]
    read = [api.Condition.from_dict(c) for c in result]
    assert api.find_condition(read, "Custom") == api.Condition.from_dict(other)
    assert api.find_condition(read, "Missing") is None


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
    assert IssuerView.from_object(issuer).is_ready() is ready


def test_issuer_without_status_is_not_ready() -> None:
    assert IssuerView.from_object({"metadata": {"generation": 1}}).is_ready() is False


def test_status_round_trips_the_ca_pem() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    status = api.build_issuer_status(conditions=[], ca_certificate_pem=pem)
    assert base64.b64decode(status["caCertificate"]) == pem
    assert _ca_certificate_from_status(status) == pem
    assert _ca_certificate_from_status({}) is None
    assert _ca_certificate_from_status(None) is None


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
    # Reading is lenient: a timestamp without a zone (or none at all) is no timestamp.
    assert api.parse_time("2025-01-01T12:00:00") is None
    assert api.parse_time(None) is None
    assert api.parse_time("yesterday") is None
    assert api.parse_time(datetime(2025, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))) == (
        datetime(2025, 1, 1, 12, tzinfo=UTC)
    )


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
