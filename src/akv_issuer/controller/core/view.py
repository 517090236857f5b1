"""An issuer object as the features read it: :class:`IssuerView` (what the
request side needs to know of it) and :func:`published_ca`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509

from akv_issuer.controller.api import (
    CONDITION_READY,
    Condition,
    find_condition,
    first_certificate,
)


@dataclass(frozen=True, slots=True)
class IssuerView:
    """What the state machine needs to know of an issuer object."""

    generation: int
    ready: Condition | None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> IssuerView:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        conditions = tuple(Condition.from_dict(c) for c in status.get("conditions") or ())
        return cls(
            generation=int(meta.get("generation") or 0),
            ready=find_condition(conditions, CONDITION_READY),
        )

    def is_ready(self) -> bool:
        ready = self.ready
        if ready is None or ready.status != "True":
            return False
        # A Ready condition written for an older spec says nothing about the
        # current one: treat it as not ready until the check catches up.
        # One without observedGeneration (the Go version wrote such) is not ours.
        if self.generation == 0:
            return True
        return (
            ready.observed_generation is not None and ready.observed_generation >= self.generation
        )


def published_ca(obj: dict[str, Any]) -> x509.Certificate | None:
    """The CA certificate the issuer's status published last (None: none yet)."""
    return first_certificate((obj.get("status") or {}).get("caCertificate"))
