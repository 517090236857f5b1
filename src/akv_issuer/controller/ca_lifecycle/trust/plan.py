"""Trust bundles: the CA certificates relying parties must trust -- the state
machine every target shares (a ConfigMap for trust-manager, signer-linked
ClusterTrustBundles).

Why: a CA held in Key Vault rotates (new key version, new CA certificate), and
the certificates the previous CA issued stay valid until they expire. A client
that trusts only the current CA rejects them; one that trusts a hand-copied
``status.caCertificate`` never learns of the new one. So each issuer with
``spec.trustBundle`` publishes, after every successful check, the trust
anchors of the current CA *and* of every previous CA that may still have valid
certificates out there, as PEM in a ConfigMap (and optionally a Secret)
labelled for trust-manager, which copies it to the namespaces of the relying
parties.

What goes in: the *trust anchor* of each CA, i.e. the top of its chain -- the
self-signed root when the CA secret holds it, else the highest certificate the
secret holds (the same certificate cert-manager's ``status.ca`` carries). A
relying party verifying a leaf builds leaf -> intermediates (which servers
send with the leaf) -> anchor; putting an intermediate into a trust store
instead would pin trust to one intermediate and break at its renewal. Two CAs
under the same root therefore share one anchor, and rotating an intermediate
under an unchanged root changes nothing in the bundle.

How long a previous anchor stays: from the moment it stopped being current
(``retiredAt``) for ``trustBundle.overlap``, else ``policy.maxDuration`` (the
longest certificate it could have issued), and never past the NotAfter of the
CA that signed under it nor of the anchor itself (leaves never outlive their
CA, so nothing verifiable through it is left after that).

Durability: the ConfigMap is the only state. An annotation records the
current anchor and, for every previous one, when it was retired and its
signing CA's NotAfter; the PEMs are the ConfigMap's data. A restarted
controller (or a new leader) reads both back, so a CA that rotated while the
controller was down is still retired -- not forgotten -- at the next check.
Certificates in the data that the annotation does not track are not ours and
are dropped.

The planning here (:func:`plan_bundle`) is pure and knows no target. Each
target keeps its own copy of the state (the annotation below) on the object
it writes, and reads it back through :meth:`Published.read`:
:class:`akv_issuer.controller.ca_lifecycle.trust.configmap.TrustBundlePublisher`
(``spec.trustBundle``: a ConfigMap, optionally a Secret) and
:class:`akv_issuer.controller.ca_lifecycle.trust.cluster_trust_bundle.ClusterTrustBundlePublisher`
(``spec.clusterTrustBundles``: a signer-linked ClusterTrustBundle). Each does
a get, then a server-side apply, and reports through events (and metrics,
conditions). A failed write never makes the issuer un-Ready: signing works
without the bundle, and the reconciler retries with backoff.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from akv_issuer.controller.api import (
    GROUP,
    IssuerSpec,
    format_time,
    parse_time,
)
from akv_issuer.controller.core import (
    COMPONENT,
    LABEL_MANAGED_BY,
    IssuerKey,
    ownership_conflict,
)
from akv_issuer.pki import CAChain

log = logging.getLogger(__name__)

LABEL_TRUST_BUNDLE: Final = f"{GROUP}/trust-bundle"
LABEL_ISSUER_KIND: Final = f"{GROUP}/issuer-kind"
LABEL_ISSUER_NAME: Final = f"{GROUP}/issuer-name"
ANNOTATION_STATE: Final = f"{GROUP}/trust-bundle-state"

EVENT_UPDATED: Final = "TrustBundleUpdated"
EVENT_FAILED: Final = "TrustBundleFailed"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

# --- pure part -----------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def trust_anchor(chain: CAChain) -> x509.Certificate:
    """The certificate relying parties put in their trust store for ``chain``:
    the top of the chain (the root, or the highest issuer the secret holds)."""
    return chain.certificates[-1]


def retention_window(spec: IssuerSpec, overlap: dt.timedelta | None) -> dt.timedelta | None:
    """How long after retirement a previous CA may still have valid leaves:
    the target's ``overlap``, else ``policy.maxDuration``; None: until its
    certificate expires."""
    return overlap if overlap is not None else spec.policy.max_duration


@dataclass(frozen=True)
class RetiredCA:
    fingerprint: str
    retired_at: dt.datetime
    signer_not_after: dt.datetime
    """NotAfter of the CA that signed under this anchor when it was retired."""

    def keep_until(self, anchor: x509.Certificate, window: dt.timedelta | None) -> dt.datetime:
        limit = min(self.signer_not_after, anchor.not_valid_after_utc)
        return limit if window is None else min(limit, self.retired_at + window)


@dataclass(frozen=True)
class BundleState:
    """What the ConfigMap's state annotation records."""

    current: str | None = None
    current_signer_not_after: dt.datetime | None = None
    retired: tuple[RetiredCA, ...] = ()

    def encode(self) -> str:
        return json.dumps(
            {
                "current": self.current,
                "currentSignerNotAfter": (
                    format_time(self.current_signer_not_after)
                    if self.current_signer_not_after
                    else None
                ),
                "retired": [
                    {
                        "sha256": r.fingerprint,
                        "retiredAt": format_time(r.retired_at),
                        "signerNotAfter": format_time(r.signer_not_after),
                    }
                    for r in self.retired
                ],
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None) -> BundleState:
        """The recorded state; an absent or unreadable annotation is an empty state."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            current = raw.get("current") or None
            signer = raw.get("currentSignerNotAfter")
            retired = tuple(
                RetiredCA(
                    fingerprint=str(item["sha256"]),
                    retired_at=_time(item["retiredAt"]),
                    signer_not_after=_time(item["signerNotAfter"]),
                )
                for item in raw.get("retired") or ()
            )
            return cls(
                current=str(current) if current else None,
                current_signer_not_after=_time(signer) if signer else None,
                retired=retired,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("unreadable trust bundle state annotation; starting afresh")
            return cls()


def _time(text: Any) -> dt.datetime:
    parsed = parse_time(str(text))
    if parsed is None:
        raise ValueError(f"not a time: {text!r}")
    return parsed


@dataclass(frozen=True)
class Published:
    """A bundle as read back from its ConfigMap."""

    certificates: Mapping[str, x509.Certificate] = field(default_factory=dict)
    state: BundleState = field(default_factory=BundleState)

    @classmethod
    def read(cls, pem: str | None, annotation: str | None) -> Published:
        certs: dict[str, x509.Certificate] = {}
        if pem:
            try:
                loaded = x509.load_pem_x509_certificates(pem.encode())
            except ValueError:
                loaded = []
            for cert in loaded:
                certs.setdefault(fingerprint(cert), cert)
        return cls(certs, BundleState.decode(annotation))


@dataclass(frozen=True)
class BundlePlan:
    """The bundle to publish and what changed against the published one."""

    certificates: tuple[x509.Certificate, ...]
    """The current anchor first, then previous ones, most recently retired first."""
    state: BundleState
    added: tuple[x509.Certificate, ...] = ()
    retired: tuple[x509.Certificate, ...] = ()
    dropped: tuple[x509.Certificate, ...] = ()

    def pem(self) -> str:
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in self.certificates
        )

    @property
    def changed(self) -> bool:
        return bool(self.added or self.retired or self.dropped)

    def summary(self) -> str:
        parts = []
        for what, certs in (
            ("added", self.added),
            ("kept as previous", self.retired),
            ("dropped", self.dropped),
        ):
            if certs:
                parts.append(f"{what} {', '.join(_describe(c) for c in certs)}")
        return "; ".join(parts) or "unchanged"


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (sha256 {fingerprint(cert)[:16]})"


def plan_bundle(
    current: CAChain,
    published: Published,
    window: dt.timedelta | None,
    now: dt.datetime,
) -> BundlePlan:
    """The next bundle, from the CA signing now and the bundle published so far.

    The current anchor is always in. The previously current anchor, if it
    differs and its PEM is still published, becomes a previous CA retired at
    ``now``. Previous CAs stay until :meth:`RetiredCA.keep_until`; an anchor
    that becomes current again stops being a previous one.
    """
    anchor = trust_anchor(current)
    anchor_fp = fingerprint(anchor)
    state = published.state
    retired = [r for r in state.retired if r.fingerprint != anchor_fp]
    newly_retired: list[x509.Certificate] = []
    if (
        state.current
        and state.current != anchor_fp
        and state.current in published.certificates
        and all(r.fingerprint != state.current for r in retired)
    ):
        old = published.certificates[state.current]
        retired.append(
            RetiredCA(
                fingerprint=state.current,
                retired_at=now,
                signer_not_after=state.current_signer_not_after or old.not_valid_after_utc,
            )
        )
        newly_retired.append(old)

    kept: list[RetiredCA] = []
    dropped: list[x509.Certificate] = []
    for entry in retired:
        cert = published.certificates.get(entry.fingerprint)
        if cert is None:
            continue  # its PEM is gone from the data: nothing left to publish
        if now >= entry.keep_until(cert, window):
            dropped.append(cert)
        else:
            kept.append(entry)
    kept.sort(key=lambda r: r.retired_at, reverse=True)

    tracked = {anchor_fp, *(r.fingerprint for r in kept)}
    dropped += [c for fp, c in published.certificates.items() if fp not in tracked]
    dropped = [c for c in dropped if fingerprint(c) != anchor_fp]
    added = () if anchor_fp in published.certificates else (anchor,)
    return BundlePlan(
        certificates=(anchor, *(published.certificates[r.fingerprint] for r in kept)),
        state=BundleState(
            current=anchor_fp,
            current_signer_not_after=current.not_after,
            retired=tuple(kept),
        ),
        added=added,
        retired=tuple(c for c in newly_retired if fingerprint(c) in tracked),
        dropped=tuple(_unique(dropped)),
    )


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[str] = set()
    out = []
    for cert in certs:
        fp = fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            out.append(cert)
    return out


def bundle_labels(key: IssuerKey) -> dict[str, str]:
    """Labels a trust-manager Bundle can select on. The issuer's name is a
    label only when it fits a label value (at most 63 characters)."""
    labels = {
        LABEL_MANAGED_BY: COMPONENT,
        LABEL_TRUST_BUNDLE: "true",
        LABEL_ISSUER_KIND: key.kind,
    }
    if _LABEL_VALUE.match(key.name):
        labels[LABEL_ISSUER_NAME] = key.name
    return labels


def owner_conflict(key: IssuerKey, existing: Mapping[str, Any] | None) -> str | None:
    """Why an existing object must not be overwritten (None: it is ours, or absent)."""
    return ownership_conflict(key, existing, "is the trust bundle of {owner}")


# --- I/O -------------------------------------------------------------------------


def metadata_in_sync(existing: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether a target object already carries every label and annotation ``body``
    sets (others may have added more: server-side apply leaves theirs alone)."""
    meta = existing.get("metadata") or {}
    want = body["metadata"]
    return all(
        (meta.get(field) or {}).get(k) == v
        for field in ("labels", "annotations")
        for k, v in (want.get(field) or {}).items()
    )
