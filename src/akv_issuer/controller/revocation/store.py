"""The durable revocation list of an issuer: one ConfigMap per issuer.

Why a ConfigMap of its own: revocations must outlive everything a user or
cert-manager deletes -- the CertificateRequest (cert-manager garbage-collects
old ones), the Certificate's Secret, the controller's memory -- and must be
readable by every replica (standbys serve the CRL too, and keep no caches).
The CertificateRequest's annotation only *asks*; the record here is the fact.
The ConfigMap lives where the issuer's trust bundle lives (the Issuer's
namespace, or the cluster resource namespace for a ClusterIssuer), under a
name derived from the issuer, never written in a spec, so no tenant can point
an issuer at another issuer's list.

Layout (data keys; everything is text so ``kubectl get -o yaml`` shows it):

- ``revocations``: one line per revoked certificate, sorted by serial:
  ``<serial hex> <reason> <revokedAt> <notAfter> <caKeyID> <namespace>/<request>``;
- ``crl.pem``: the current CRL (PEM), when the issuer has CRLs enabled;
- ``crl-state``: JSON ``{number, thisUpdate, nextUpdate, entries, digest, caKeyID}``
  of that CRL: the CRL number must only ever grow, so it is kept here, not in
  memory; ``digest`` covers the revocation lines the CRL was made from, so a
  new leader knows whether a revocation is still missing from it.

Every write is a JSON merge patch carrying the ``resourceVersion`` it was
computed from (a create when there is nothing yet): a concurrent writer makes
it fail with 409 and the caller reads again, so no revocation is overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from akv_issuer.controller.api import GROUP, format_time, parse_time
from akv_issuer.controller.core import (
    ANNOTATION_ISSUER,
    COMPONENT,
    LABEL_MANAGED_BY,
    IssuerKey,
    issuer_identity,
    owner_namespace,
    ownership_conflict,
    permissions,
)

# The annotation a user sets on a CertificateRequest, and the one the controller
# sets once the revocation is recorded.
ANNOTATION_REVOKE: Final = f"{GROUP}/revoke"
ANNOTATION_REVOKED: Final = f"{GROUP}/revoked"
LABEL_REVOCATIONS: Final = f"{GROUP}/revocations"

KEY_REVOCATIONS: Final = "revocations"
KEY_CRL: Final = "crl.pem"
KEY_CRL_STATE: Final = "crl-state"


def crl_keys(member: str | None) -> tuple[str, str]:
    """The data keys of a CRL and its state: the issuer's own key's (``crl.pem``,
    ``crl-state``), or a CA pool member's (``crl-<member>.pem``, ``crl-state-<member>``)."""
    if member is None:
        return KEY_CRL, KEY_CRL_STATE
    return f"crl-{member}.pem", f"crl-state-{member}"


# RFC 5280 reason names as written in the annotation. certificateHold is left
# out on purpose: a hold is meant to be lifted, and there is no un-revoke here;
# removeFromCRL only makes sense in delta CRLs.
REASONS: Final[Mapping[str, x509.ReasonFlags]] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
DEFAULT_REASON: Final = "keyCompromise"
_BY_LOWER = {name.lower(): name for name in REASONS}
# A ConfigMap holds at most 1 MiB; stop short of it so the CRL still fits.
MAX_CONFIGMAP_BYTES: Final = 900 * 1024


class ReasonError(ValueError):
    pass


def parse_reason(value: str | None) -> str:
    """The RFC 5280 reason name an annotation value asks for (case-insensitive;
    empty or ``true``: keyCompromise)."""
    text = (value or "").strip()
    if text in ("", "true", "True"):
        return DEFAULT_REASON
    name = _BY_LOWER.get(text.lower())
    if name is None:
        raise ReasonError(
            f"revocation reason {text!r} is not one of {', '.join(REASONS)} "
            "(certificateHold is not supported: a revocation here cannot be lifted)"
        )
    return name


def key_id(public_key: Any) -> str:
    """A short, stable name of a CA key: the first 8 octets of its SHA-256 over SPKI."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True, slots=True, order=True)
class Revocation:
    serial: int
    reason: str
    revoked_at: dt.datetime
    not_after: dt.datetime
    ca_key_id: str
    request: str  # namespace/name of the CertificateRequest that carried the certificate

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"

    def line(self) -> str:
        return " ".join(
            (
                self.serial_hex,
                self.reason,
                format_time(self.revoked_at),
                format_time(self.not_after),
                self.ca_key_id,
                self.request,
            )
        )

    @classmethod
    def parse(cls, line: str) -> Revocation:
        serial, reason, revoked_at, not_after, ca_key, request = line.split(" ", 5)
        when, until = parse_time(revoked_at), parse_time(not_after)
        if when is None or until is None or reason not in REASONS:
            raise ValueError(f"unreadable revocation line {line!r}")
        return cls(int(serial, 16), reason, when, until, ca_key, request)


@dataclass(frozen=True, slots=True)
class CRLState:
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    entries: int
    digest: str
    ca_key_id: str

    def encode(self) -> str:
        return json.dumps(
            {
                "number": self.number,
                "thisUpdate": format_time(self.this_update),
                "nextUpdate": format_time(self.next_update),
                "entries": self.entries,
                "digest": self.digest,
                "caKeyID": self.ca_key_id,
            },
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str | None) -> CRLState | None:
        if not text:
            return None
        try:
            raw = json.loads(text)
            this_update, next_update = parse_time(raw["thisUpdate"]), parse_time(raw["nextUpdate"])
            if this_update is None or next_update is None:
                return None
            return cls(
                int(raw["number"]),
                this_update,
                next_update,
                int(raw["entries"]),
                str(raw["digest"]),
                str(raw["caKeyID"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RevocationList:
    """What the ConfigMap holds, as read (``resource_version`` None: absent)."""

    revocations: tuple[Revocation, ...] = ()
    crl_pem: str | None = None
    crl_state: CRLState | None = None
    resource_version: str | None = None
    skipped: int = 0  # unreadable lines (kept out of CRLs; logged by callers)
    raw_lines: tuple[str, ...] = field(default=(), repr=False)
    # The data as read, for the CRLs of CA pool members (crl_of).
    data: Mapping[str, str] = field(default_factory=dict, repr=False)

    def crl_of(self, member: str | None) -> tuple[str | None, CRLState | None]:
        """The CRL (PEM) and its state of the issuer's own key (None) or of a pool member."""
        if member is None:
            return self.crl_pem, self.crl_state
        pem_key, state_key = crl_keys(member)
        return self.data.get(pem_key) or None, CRLState.decode(self.data.get(state_key))

    def find(self, serial: int) -> Revocation | None:
        for revocation in self.revocations:
            if revocation.serial == serial:
                return revocation
        return None

    def for_key(
        self, ca_key_id: str, now: dt.datetime, keep_expired: dt.timedelta
    ) -> list[Revocation]:
        """The entries a CRL signed by ``ca_key_id`` lists: its own certificates,
        without those expired for longer than ``keep_expired``."""
        return [
            r
            for r in self.revocations
            if r.ca_key_id == ca_key_id and r.not_after + keep_expired >= now
        ]

    @staticmethod
    def digest(entries: Iterable[Revocation]) -> str:
        text = "\n".join(r.line() for r in sorted(entries))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def read(cls, obj: Mapping[str, Any] | None) -> RevocationList:
        if obj is None:
            return cls()
        data = obj.get("data") or {}
        revocations: list[Revocation] = []
        skipped = 0
        lines = tuple(line for line in str(data.get(KEY_REVOCATIONS) or "").splitlines() if line)
        for line in lines:
            try:
                revocations.append(Revocation.parse(line))
            except ValueError:
                skipped += 1
        return cls(
            revocations=tuple(sorted(revocations)),
            crl_pem=data.get(KEY_CRL) or None,
            crl_state=CRLState.decode(data.get(KEY_CRL_STATE)),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or "") or None,
            skipped=skipped,
            raw_lines=lines,
            data={str(k): str(v) for k, v in data.items()},
        )

    def with_revocation(self, revocation: Revocation) -> RevocationList:
        return replace(self, revocations=tuple(sorted((*self.revocations, revocation))))

    def lines_to_keep(self) -> list[str]:
        """Readable entries, re-encoded in serial order, then unreadable lines as
        they were (never silently dropped: an operator can fix them by hand)."""
        readable = [r.line() for r in self.revocations]
        known = set(readable)
        unreadable = [line for line in self.raw_lines if line not in known and not _readable(line)]
        return readable + unreadable


def _readable(line: str) -> bool:
    try:
        Revocation.parse(line)
    except ValueError:
        return False
    return True


def list_name(key: IssuerKey) -> str:
    """``akv-revocations-issuer-<name>`` / ``akv-revocations-clusterissuer-<name>``;
    the kind keeps a ClusterIssuer's list apart from an Issuer's of the same name
    in the cluster resource namespace. Long names are shortened with a hash."""
    name = f"akv-revocations-{key.kind.lower()}-{key.name}"
    if len(name) > 253:
        digest = hashlib.sha256(key.name.encode()).hexdigest()[:10]
        name = f"{name[:242]}-{digest}"
    return name


class RevocationListConflict(Exception):
    """Someone else wrote the ConfigMap since it was read: read again and redo."""


class NotOurs(Exception):
    """The ConfigMap exists but belongs to something else."""


class RevocationStore:
    """Reads and writes the revocation ConfigMaps (no cache: every replica reads fresh)."""

    def __init__(self, client: AsyncClient, cluster_resource_namespace: str, field_manager: str):
        self._client = client
        self._cluster_ns = cluster_resource_namespace
        self._field_manager = field_manager

    def where(self, key: IssuerKey) -> tuple[str, str]:
        return owner_namespace(key, self._cluster_ns), list_name(key)

    def permission(self, key: IssuerKey) -> permissions.Permission:
        """What the controller needs to read and write ``key``'s list (for a 403)."""
        return permissions.configmaps(owner_namespace(key, self._cluster_ns), self._cluster_ns)

    async def read(self, key: IssuerKey) -> RevocationList:
        namespace, name = self.where(key)
        try:
            found: Any = await self._client.get(ConfigMap, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return RevocationList()
            raise
        obj = dict(found.to_dict())
        conflict = ownership_conflict(key, obj, "holds the revocations of {owner}")
        if conflict is not None:
            raise NotOurs(f"ConfigMap {namespace}/{name} {conflict}")
        return RevocationList.read(obj)

    async def write(
        self,
        key: IssuerKey,
        base: RevocationList,
        *,
        revocations: RevocationList | None = None,
        crl: tuple[str, CRLState] | None = None,
        member: str | None = None,
    ) -> None:
        """Write the revocation lines of ``revocations`` and/or a new CRL (of the issuer's
        own key, or of CA pool member ``member``), on top of ``base`` as read;
        :class:`RevocationListConflict` when it changed since."""
        namespace, name = self.where(key)
        data: dict[str, str] = {}
        if revocations is not None:
            lines = revocations.lines_to_keep()
            data[KEY_REVOCATIONS] = "".join(f"{line}\n" for line in lines)
        if crl is not None:
            pem_key, state_key = crl_keys(member)
            data[pem_key], data[state_key] = crl[0], crl[1].encode()
        size = sum(len(v) for v in data.values())
        if size > MAX_CONFIGMAP_BYTES:
            raise OverflowError(
                f"ConfigMap {namespace}/{name} would hold {size} bytes, more than "
                f"{MAX_CONFIGMAP_BYTES}: too many live revocations for one issuer"
            )
        try:
            if base.resource_version is None:
                await self._client.create(
                    ConfigMap(
                        metadata=ObjectMeta(
                            name=name,
                            namespace=namespace,
                            labels={LABEL_MANAGED_BY: COMPONENT, LABEL_REVOCATIONS: "true"},
                            annotations={ANNOTATION_ISSUER: issuer_identity(key)},
                        ),
                        data=data,
                    ),
                    field_manager=self._field_manager,
                )
            else:
                await self._client.patch(
                    ConfigMap,
                    name,
                    {"metadata": {"resourceVersion": base.resource_version}, "data": data},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                    field_manager=self._field_manager,
                )
        except ApiError as err:
            if err.status.code == 409:
                raise RevocationListConflict(str(err.status.message)) from None
            raise
