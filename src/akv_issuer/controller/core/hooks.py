"""How features plug into the issuer side: the one way to wire a feature.

The issuers feature (:mod:`akv_issuer.controller.issuers`) watches and checks
Issuers and ClusterIssuers. Every other feature reaches it only through
:class:`IssuerSide` (a ``Protocol``): it asks (``lookup``, ``issuer_object``),
prompts (``request_check``, ``report_fault``) and is told, in one of three
ways registered by the feature's ``setup()``:

- ``subscribe(listener)``: ``listener(key)`` after any change of an issuer
  (checked, failed, updated, deleted) -- the request flows and the CRL
  publisher requeue what waits for it;
- ``follow(follower)``: a :class:`CheckFollower` works on every successful
  check inside the issuer's reconcile -- before its status is written (and
  may add a condition to it and bring the next check forward), and after it
  (and may ask for a retry with backoff), and forgets an issuer that is gone;
  trust bundles and re-issuing follow this way;
- ``renew_ca_with(renewal)``: a :class:`CARenewal` runs inside the check, after
  the CA certificate passed, and may hand back a renewed chain; CA renewal
  plugs in this way.

:class:`IssuerHooks` keeps these registrations for the issuers feature and
runs them in registration order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from akv_issuer.controller.api import IssuerSpec
from akv_issuer.controller.core.checked import CheckedIssuer, Renewal
from akv_issuer.controller.core.failures import CheckFailed
from akv_issuer.controller.core.issuer import IssuerKey
from akv_issuer.controller.core.view import IssuerView
from akv_issuer.keyvault import AuthConfig, KeyInfo
from akv_issuer.pki import CAChain, SignatureAlgorithm

IssuerListener = Callable[[IssuerKey], None]


@dataclass(frozen=True, slots=True)
class FeatureCondition:
    """An issuer status condition a follower owns: it appears once it has
    something to say, True with ``active`` while that holds, then False with
    ``inactive`` (each a ``(reason, message)``)."""

    type: str
    active: tuple[str, str] | None
    inactive: tuple[str, str]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What a follower adds to a successful check: its conditions for the
    status, and how soon the issuer must be checked again (None: at the
    ``--issuer-recheck-interval``)."""

    conditions: tuple[FeatureCondition, ...] = ()
    recheck_within: float | None = None


class CheckFollower(Protocol):
    """A feature's work on every successful issuer check."""

    @property
    def condition_types(self) -> tuple[str, ...]:
        """The status conditions it owns: a failed check keeps them as they are."""
        ...

    def checked(self, obj: dict[str, Any], checked: CheckedIssuer) -> FollowUp:
        """Before the status write; ``obj`` is the issuer object as last observed."""
        ...

    async def settled(self, obj: dict[str, Any], checked: CheckedIssuer, now: dt.datetime) -> bool:
        """After the status write, the events and the listeners; False: the work
        could not be done (the follower reported why), retry with backoff. Never
        makes the issuer un-Ready."""
        ...

    def forget(self, key: IssuerKey) -> None:
        """The issuer is gone."""
        ...

    async def close(self) -> None:
        """Stop background work (after the workers stopped)."""
        ...


class CARenewal(Protocol):
    """Renews a CA certificate in its renewal window during the issuer check.

    Returns the chain to sign with and what renewal did (None: not due).
    ``NotLeading`` from the fence propagates: the check is abandoned."""

    async def __call__(
        self,
        spec: IssuerSpec,
        auth: AuthConfig,
        key: KeyInfo,
        algorithm: SignatureAlgorithm,
        ca: CAChain,
        now: dt.datetime,
        /,
    ) -> tuple[CAChain, Renewal | None]: ...


class IssuerSide(Protocol):
    """What every other feature may use of the issuer side (``IssuerReconciler``)."""

    def lookup(self, key: IssuerKey) -> tuple[IssuerView | None, CheckedIssuer | None]:
        """The issuer as last observed (None: it does not exist) and, when this
        process has checked its current generation successfully, what signing needs."""
        ...

    def issuer_object(self, key: IssuerKey) -> dict[str, Any] | None:
        """The issuer object as last observed (for events about it)."""
        ...

    def request_check(self, key: IssuerKey) -> None:
        """Check ``key`` soon."""
        ...

    async def report_fault(
        self, key: IssuerKey, failure: CheckFailed, *, recheck_now: bool
    ) -> None:
        """A signing attempt showed the issuer cannot sign: flip it and re-check."""
        ...

    def subscribe(self, listener: IssuerListener) -> None: ...

    def follow(self, follower: CheckFollower) -> None: ...

    def renew_ca_with(self, renewal: CARenewal) -> None: ...


class IssuerHooks:
    """The registrations of :class:`IssuerSide`, run by the issuers feature."""

    def __init__(self) -> None:
        self._listeners: list[IssuerListener] = []
        self._followers: list[CheckFollower] = []
        self.renewal: CARenewal | None = None

    def subscribe(self, listener: IssuerListener) -> None:
        self._listeners.append(listener)

    def follow(self, follower: CheckFollower) -> None:
        self._followers.append(follower)

    def renew_ca_with(self, renewal: CARenewal) -> None:
        if self.renewal is not None:
            raise ValueError("a CA renewal is already plugged in")
        self.renewal = renewal

    @property
    def followers(self) -> Sequence[CheckFollower]:
        return tuple(self._followers)

    @property
    def condition_types(self) -> tuple[str, ...]:
        """Every condition type a follower owns, in registration order."""
        return tuple(t for f in self._followers for t in f.condition_types)

    def notify(self, key: IssuerKey) -> None:
        for listener in self._listeners:
            listener(key)

    def checked(self, obj: dict[str, Any], checked: CheckedIssuer) -> FollowUp:
        """Every follower's follow-up, merged: their conditions in order, the
        soonest re-check."""
        conditions: list[FeatureCondition] = []
        within: float | None = None
        for follower in self._followers:
            follow_up = follower.checked(obj, checked)
            conditions.extend(follow_up.conditions)
            if follow_up.recheck_within is not None:
                within = (
                    follow_up.recheck_within
                    if within is None
                    else min(within, follow_up.recheck_within)
                )
        return FollowUp(tuple(conditions), within)

    async def settled(self, obj: dict[str, Any], checked: CheckedIssuer, now: dt.datetime) -> bool:
        """Every follower's work after the status write; False when any could not."""
        ok = True
        for follower in self._followers:
            ok = await follower.settled(obj, checked, now) and ok
        return ok

    def forget(self, key: IssuerKey) -> None:
        for follower in self._followers:
            follower.forget(key)

    async def close(self) -> None:
        for follower in self._followers:
            await follower.close()
