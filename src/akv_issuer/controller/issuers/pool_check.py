"""The check of a CA pool (``spec.pool``): every member as a single-key issuer, then the
pool's own rules.

Each member (the issuer's own key first, then ``pool.members``) is checked exactly as an
issuer of that key alone (``check_member``: key, CA, match, algorithm, key protection).
A member then is

- **Ready**: it passed, its chain ends in the pool's root, no other member holds its key;
- **Unavailable**: its vault failed (unreachable, throttled, forbidden, firewall) -- its
  circuit breaker (``core.pool``) opens, signing passes it by until a probe succeeds; or
  its breaker is open since signing found its vault failing;
- **Invalid**: anything else -- a key or CA fault, a CA for another member's key, a chain
  to another root than the others', a key another member names already.

A member whose breaker is open is not checked: its vault is not asked until the breaker
lets one probe through, and it keeps what its last passed check found (so signing can
probe it). Once half-open, the check is that probe (unless a request holds it): it
passes, the breaker closes and the member is Ready again; it fails, the breaker opens
for longer. The issuer is requeued for the soonest probe
(``CheckedIssuer.probe_in``, ``core.pool.probe_delay``), so a member whose vault came
back shows Ready without any request signing.

The issuer is Ready while one member can sign. An Invalid member makes it not Ready
(``InvalidSpec`` or the member's CA reason, the message naming it) unless
``pool.onInvalidMember`` is ``Exclude``; then the member is set aside and status.members
says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from akv_issuer.controller.api import IssuerReason, IssuerSpec
from akv_issuer.controller.core import CheckedIssuer, CheckFailed, IssuerKey, KeyProtection
from akv_issuer.controller.core.checked import (
    MEMBER_INVALID,
    MEMBER_READY,
    MEMBER_UNAVAILABLE,
    MemberState,
    PoolMember,
)
from akv_issuer.controller.core.pool import BreakerState, MemberRef, PoolHealth, probe_delay
from akv_issuer.keyvault import AuthConfig, KeyInfo
from akv_issuer.pki import CAChain, IssuerProfile, SignatureAlgorithm, is_self_signed

# Failures of a member's vault rather than of the member: its breaker opens.
HEALTH_REASONS = frozenset(
    {
        IssuerReason.THROTTLED,
        IssuerReason.KEY_VAULT_UNREACHABLE,
        IssuerReason.FORBIDDEN,
        IssuerReason.KEY_VAULT_NETWORK_DENIED,
    }
)


@dataclass(frozen=True)
class KeyChecked:
    """One key's check passed: what signing with it needs."""

    key_info: KeyInfo
    ca: CAChain
    algorithm: SignatureAlgorithm
    protection: KeyProtection | None
    pending_key_version: str | None = None


class MemberCAFailed(CheckFailed):
    """The CA certificate does not fit the key (a :class:`CheckFailed` as any other),
    with the CA as read and the key, so a pool can say whose CA it is."""

    def __init__(self, failure: CheckFailed, ca_text: str, key_info: KeyInfo) -> None:
        super().__init__(
            failure.reason,
            failure.message,
            retryable=failure.retryable,
            retry_after=failure.retry_after,
        )
        self.ca_text = ca_text
        self.key_info = key_info


CheckMember = Callable[[IssuerKey, IssuerSpec, AuthConfig, dt.datetime], Awaitable[KeyChecked]]


@dataclass
class _Result:
    name: str
    ref: MemberRef
    spec: IssuerSpec
    found: KeyChecked | None = None
    failure: CheckFailed | None = None
    invalid: bool = False

    def fail(self, reason: IssuerReason, message: str, *, retryable: bool = True) -> None:
        self.found = None
        self.invalid = True
        self.failure = CheckFailed(reason, message, retryable=retryable)


def _prefixed(name: str, failure: CheckFailed) -> str:
    return f"pool member {name!r}: {failure.message}"


async def check_pool(
    key: IssuerKey,
    spec: IssuerSpec,
    auth: AuthConfig,
    now: dt.datetime,
    *,
    uid: str,
    generation: int,
    profile_of: Callable[[IssuerSpec], IssuerProfile],
    check_member: CheckMember,
    health: PoolHealth,
    monotonic: float,
    remembered: dict[str, tuple[IssuerSpec, KeyChecked]] | None = None,
    forget_key: Callable[[KeyInfo], None] | None = None,
) -> CheckedIssuer:
    """The pool's checked issuer (see the module), or :class:`CheckFailed` naming the
    member(s) when none can sign, or a member is Invalid and ``onInvalidMember`` is
    ``Fail``. ``remembered``: by member name, what its last passed check found (kept
    up to date here; an open member's is used instead of asking its vault);
    ``forget_key`` drops a probed member's cached key, so the probe asks its vault."""
    pool = spec.pool
    assert pool is not None
    profile_of(spec)  # a spec the profile refuses is InvalidSpec before any Key Vault call
    memory: dict[str, tuple[IssuerSpec, KeyChecked]] = {} if remembered is None else remembered
    retry_after = pool.retry_after.total_seconds()
    results: list[_Result] = []
    for name, member_spec in spec.member_specs():
        ref = MemberRef(name, member_spec.key_vault_base_url, member_spec.key_name)
        results.append(
            await _check_one(
                _Result(name, ref, member_spec),
                key,
                auth,
                now,
                check_member=check_member,
                health=health,
                monotonic=monotonic,
                retry_after=retry_after,
                memory=memory,
                forget_key=forget_key,
            )
        )
    for gone in set(memory) - {r.name for r in results}:
        del memory[gone]

    _same_key_twice(results)
    _another_members_ca(results)
    _one_root(results, pool.primary_name)
    _complete_chains(results)

    invalid = [r for r in results if r.invalid]
    if invalid and not pool.exclude_invalid:
        first = invalid[0]
        assert first.failure is not None
        others = [r.name for r in invalid[1:]]
        message = _prefixed(first.name, first.failure)
        if others:
            message += f" (also invalid: {', '.join(others)})"
        message += "; set pool.onInvalidMember: Exclude to sign with the other members meanwhile"
        raise CheckFailed(
            first.failure.reason,
            message,
            retryable=first.failure.retryable,
            retry_after=first.failure.retry_after,
        )

    members: list[PoolMember] = []
    states: list[MemberState] = []
    for result in results:
        states.append(_state(result, health, monotonic))
        if result.found is None:
            continue
        found = result.found
        member_checked = CheckedIssuer(
            key=key,
            uid=uid,
            generation=generation,
            spec=result.spec,
            auth=auth,
            key_info=found.key_info,
            algorithm=found.algorithm,
            ca=found.ca,
            # The member's own (its crlDistributionPoints name its CRL).
            profile=profile_of(result.spec),
            checked_at=now,
            pending_key_version=found.pending_key_version,
            protection=found.protection,
        )
        members.append(PoolMember(result.name, result.ref, member_checked))

    if not members:
        failed = [r for r in results if r.failure is not None]
        first = failed[0]
        assert first.failure is not None
        detail = "; ".join(_prefixed(r.name, r.failure) for r in failed if r.failure)
        # Back when the first member may be probed (or as its vault said).
        probe_in = probe_delay([r.ref for r in results], health, monotonic, probing=retry_after)
        raise CheckFailed(
            first.failure.reason,
            f"no pool member can sign: {detail}",
            retryable=True,
            retry_after=min(
                (r.failure.retry_after for r in failed if r.failure and r.failure.retry_after),
                default=probe_in,
            ),
        )
    # Prefer a member whose breaker is closed for the issuer's own fields (status.caCertificate).
    ready = [m for m, s in zip(members, _ready_flags(members, states), strict=True) if s]
    lead = (ready or members)[0].checked
    return replace(
        lead,
        spec=spec,
        members=tuple(members),
        member_states=tuple(states),
        probe_in=probe_delay([r.ref for r in results], health, monotonic, probing=retry_after),
    )


async def _check_one(
    result: _Result,
    key: IssuerKey,
    auth: AuthConfig,
    now: dt.datetime,
    *,
    check_member: CheckMember,
    health: PoolHealth,
    monotonic: float,
    retry_after: float,
    memory: dict[str, tuple[IssuerSpec, KeyChecked]],
    forget_key: Callable[[KeyInfo], None] | None,
) -> _Result:
    """One member's check, as its breaker allows (see the module)."""
    name, ref, member_spec = result.name, result.ref, result.spec
    state = health.state(ref, monotonic)
    probe = state is BreakerState.HALF_OPEN and health.try_probe(ref, monotonic)
    if state is not BreakerState.CLOSED and not probe:
        # Set aside, or a request probes it now: its vault is not asked.
        kept = memory.get(name)
        if kept is not None and kept[0] == member_spec:
            result.found = kept[1]
        else:
            breaker = health.breaker(ref)
            result.failure = CheckFailed(
                _reason(breaker.reason),
                breaker.message.removeprefix(f"pool member {name!r}: ") or "its vault failed",
                retry_after=max(0.0, breaker.open_until - monotonic) or None,
            )
        return result
    kept = memory.get(name)
    if probe and kept is not None and forget_key is not None:
        forget_key(kept[1].key_info)  # a cached key would answer without the vault
    try:
        result.found = await check_member(key, member_spec, auth, now)
    except CheckFailed as failure:
        result.failure = failure
        result.invalid = failure.reason not in HEALTH_REASONS
        if not result.invalid:
            health.failed(
                ref,
                monotonic,
                retry_after=retry_after,
                vault_retry_after=failure.retry_after,
                reason=str(failure.reason),
                message=_prefixed(name, failure),
                throttled=failure.reason == IssuerReason.THROTTLED,
            )
        elif probe:
            # The member is wrong, not its vault (which may well have answered): its
            # state is Invalid now, and a breaker left half-open would be probed again
            # at every check.
            health.succeeded(ref)
        memory.pop(name, None)
        return result
    except BaseException:
        if probe:
            health.release_probe(ref)
        raise
    memory[name] = (member_spec, result.found)
    if probe:
        # The check was the member's probe: its vault answers again.
        health.succeeded(ref)
    return result


def _reason(text: str) -> IssuerReason:
    """The issuer reason a breaker was opened with (unreachable when it names none)."""
    try:
        return IssuerReason(text)
    except ValueError:
        return IssuerReason.KEY_VAULT_UNREACHABLE


def _ready_flags(members: Sequence[PoolMember], states: Sequence[MemberState]) -> list[bool]:
    by_name = {s.name: s.state for s in states}
    return [by_name.get(m.name) == MEMBER_READY for m in members]


def _state(result: _Result, health: PoolHealth, monotonic: float) -> MemberState:
    if result.found is not None:
        found = result.found
        breaker = health.breaker(result.ref) if result.ref.key in health.breakers else None
        if breaker is not None and health.state(result.ref, monotonic) is not BreakerState.CLOSED:
            return MemberState(
                result.name,
                MEMBER_UNAVAILABLE,
                breaker.reason or str(IssuerReason.KEY_VAULT_UNREACHABLE),
                breaker.message or f"pool member {result.name!r}: its vault failed",
                key_id=found.key_info.kid,
                ca_not_after=found.ca.not_after,
            )
        return MemberState(
            result.name,
            MEMBER_READY,
            str(IssuerReason.CHECKED),
            f"pool member {result.name!r}: key {result.spec.key_name} version "
            f"{found.key_info.version} signs with {found.algorithm}",
            key_id=found.key_info.kid,
            ca_not_after=found.ca.not_after,
        )
    failure = result.failure
    assert failure is not None
    return MemberState(
        result.name,
        MEMBER_INVALID if result.invalid else MEMBER_UNAVAILABLE,
        str(failure.reason),
        _prefixed(result.name, failure),
    )


def _same_key_twice(results: Sequence[_Result]) -> None:
    """A member whose key another member (earlier in the pool) names already, by name or
    by its public key (the same key reached another way), is Invalid."""
    seen: dict[tuple[str, str], str] = {}
    seen_keys: list[tuple[KeyInfo, str]] = []
    for result in results:
        earlier = seen.get(result.ref.key)
        if earlier is None and result.found is not None:
            public = result.found.key_info.public_key
            earlier = next((n for info, n in seen_keys if info.public_key == public), None)
        if earlier is not None:
            result.fail(
                IssuerReason.INVALID_SPEC,
                f"key {result.spec.key_name!r} in {result.spec.key_vault_base_url} is the key "
                f"of member {earlier!r} already: every member needs a key of its own",
                retryable=False,
            )
            continue
        seen.setdefault(result.ref.key, result.name)
        if result.found is not None:
            seen_keys.append((result.found.key_info, result.name))


def _another_members_ca(results: Sequence[_Result]) -> None:
    """A member whose CA certificate does not hold its key: say whose key it holds."""
    keys: list[tuple[str, KeyInfo]] = []
    for result in results:
        if result.found is not None:
            keys.append((result.name, result.found.key_info))
        elif isinstance(result.failure, MemberCAFailed):
            keys.append((result.name, result.failure.key_info))
    for result in results:
        failure = result.failure
        if (
            not isinstance(failure, MemberCAFailed)
            or failure.reason != IssuerReason.CA_KEY_MISMATCH
        ):
            continue
        try:
            certificates = x509.load_pem_x509_certificates(failure.ca_text.encode())
        except ValueError:
            continue
        for name, info in keys:
            if name == result.name:
                continue
            if any(c.public_key() == info.public_key for c in certificates):
                result.fail(
                    IssuerReason.CA_KEY_MISMATCH,
                    f"{result.spec.ca_description} holds the CA certificate of member "
                    f"{name!r} (key {info.name!r}), not one for its own key "
                    f"{result.spec.key_name!r}",
                )
                break


def _anchor(chain: CAChain) -> tuple[str, bytes | None]:
    """The root a chain ends in: a self-signed top's subject and key identifier, else the
    top's issuer and authority key identifier (a chain without its root)."""
    top = chain.certificates[-1]
    if top.issuer == top.subject:
        try:
            ski = top.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = None
        return (top.subject.rfc4514_string(), ski)
    try:
        aki = top.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        key_id = aki.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    return (top.issuer.rfc4514_string(), key_id)


def _complete_chains(results: Sequence[_Result]) -> None:
    """A member whose chain stops below the root gets the root another member's chain
    holds (once it verifies the chain's top): every member's certificates then carry the
    same root in ``status.ca``, and trust bundles publish that one root whichever member
    signs."""
    roots = [
        r.found.ca.certificates[-1]
        for r in results
        if r.found is not None and is_self_signed(r.found.ca.certificates[-1])
    ]
    if not roots:
        return
    root = roots[0]
    for result in results:
        found = result.found
        if found is None or is_self_signed(found.ca.certificates[-1]):
            continue
        top = found.ca.certificates[-1]
        try:
            top.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            result.fail(
                IssuerReason.CA_INVALID,
                f"{result.spec.ca_description}: its chain's top "
                f"{top.subject.rfc4514_string()!r} is not signed by the pool's root "
                f"{root.subject.rfc4514_string()!r}",
            )
            continue
        result.found = replace(found, ca=CAChain((*found.ca.certificates, root)))


def _one_root(results: Sequence[_Result], primary: str) -> None:
    """Every member's chain ends in the same root: the one most members chain to (ties:
    the issuer's own key's). The others are Invalid."""
    anchors = {r.name: _anchor(r.found.ca) for r in results if r.found is not None}
    if len(set(anchors.values())) <= 1:
        return
    counts: dict[tuple[str, bytes | None], list[str]] = {}
    for name, anchor in anchors.items():
        counts.setdefault(anchor, []).append(name)
    pool_root = max(counts, key=lambda a: (len(counts[a]), primary in counts[a]))
    for result in results:
        found = anchors.get(result.name)
        if found is None or found == pool_root:
            continue
        anchor = found
        result.fail(
            IssuerReason.CA_INVALID,
            f"{result.spec.ca_description} chains to root {anchor[0]!r}, not to the pool's "
            f"root {pool_root[0]!r} (members {', '.join(counts[pool_root])}): every member "
            f"must be an intermediate under the same root",
        )
