"""Status conditions and the timestamps in them: the one copy for the controller.

Conditions are read from objects the API server hands us (our issuers,
cert-manager's CertificateRequests, Kubernetes CSRs) and written back by
server-side apply. Reading and writing had grown two copies with different
rules (one strict, one lenient), so a timestamp could be accepted in one place
and refused in the other. This module is the single copy:

- :class:`Condition` is an immutable view of one condition as read;
  :func:`find_condition` picks one by type.
- :func:`make_condition` builds one in the CRD's shape for a status write.
- :func:`format_time` writes ``metav1.Time`` (UTC, whole seconds, ``Z``);
  :func:`parse_time` reads one leniently: ``None`` for a missing or unreadable
  value, so a bad timestamp in someone else's object cannot crash a reconcile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from akv_issuer.controller.api.names import ConditionStatus
from akv_issuer.controller.api.objects import ConditionFields

__all__ = [
    "Condition",
    "conditions_of",
    "find_condition",
    "format_time",
    "make_condition",
    "parse_time",
]


@dataclass(frozen=True, slots=True)
class Condition:
    """One entry of ``status.conditions`` as read from an object."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Condition:
        gen = raw.get("observedGeneration")
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "")),
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            last_transition_time=raw.get("lastTransitionTime"),
            observed_generation=int(gen) if gen is not None else None,
        )


def conditions_of(obj: Mapping[str, Any]) -> tuple[Condition, ...]:
    """The ``status.conditions`` of an object (none when it has no status yet)."""
    status = obj.get("status") or {}
    return tuple(Condition.from_dict(c) for c in status.get("conditions") or ())


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The first condition of ``type_``, or None."""
    for condition in conditions:
        if condition.type == type_:
            return condition
    return None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises.

    A naive datetime is refused (ValueError): which zone it meant is unknown.
    """
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (``2024-01-02T03:04:05Z``, fractions allowed) in UTC.

    Lenient, for reading objects: None when ``value`` is missing, not a
    timestamp, or has no time zone (metav1.Time always carries one, so a value
    without is not one we wrote or the API server stored). An aware datetime
    is returned in UTC.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def make_condition(
    type_: str,
    status: ConditionStatus | str,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
) -> ConditionFields:
    """One entry of ``status.conditions`` in the CRD's shape, for a status write."""
    condition: ConditionFields = {
        "type": type_,
        "status": str(ConditionStatus(status)),
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    return condition
