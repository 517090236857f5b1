"""What the request flow keeps between events, and why it stays bounded.

- for each approved or denied, unfinished request addressed to us: the issuer
  it names, its approval state, the object as the watch last delivered it
  and the last event sent for it (one event per distinct message, not per
  retry). Finished ones are forgotten as soon as they are seen finished;
- signed certificates whose status write has not landed yet, by request uid,
  so a failed write is retried with the *same* certificate, never a second
  signature;
- the resourceVersion of each status write of ours until the watch delivers
  it, so an event older than our own write is not taken for news.

Everything is keyed by request (``namespace/name``, or the uid for
signatures) and dropped when the request is finished, deleted, or missing
from a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from akv_issuer.controller.api.objects import HasMetadata
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.requests.signing import Signed

# The request kind's object type (api.objects: CertificateRequestObject, KubeCSRObject).
RequestT = TypeVar("RequestT", bound=HasMetadata)


@dataclass(frozen=True, slots=True)
class Entry(Generic[RequestT]):
    issuer: IssuerKey
    approval: tuple[bool, bool]  # (approved, denied)
    obj: RequestT  # the watch's copy
    last_event: tuple[str, str] | None = None  # (reason, message) last recorded


class RequestMemory(Generic[RequestT]):
    def __init__(self) -> None:
        self.entries: dict[str, Entry[RequestT]] = {}
        # Signed, the Issued write not landed yet: by request uid.
        self.signed: dict[str, Signed] = {}
        self._written_rv: dict[str, int] = {}

    # -- our own writes -----------------------------------------------------------

    def wrote(self, key: str, written: HasMetadata | None) -> None:
        """Our status write of ``key`` landed (``written``: the object as written)."""
        if written is None:
            return
        try:
            self._written_rv[key] = int((written.get("metadata") or {}).get("resourceVersion") or 0)
        except (TypeError, ValueError):
            self._written_rv.pop(key, None)

    def older_than_our_write(self, key: str, resource_version: int) -> bool:
        """Whether an event of ``key`` at ``resource_version`` predates our own
        last write (not news). Once the watch caught up the write is forgotten."""
        written = self._written_rv.get(key)
        if written is None:
            return False
        if resource_version < written:
            return True
        del self._written_rv[key]
        return False

    def awaits_our_write(self, key: str) -> bool:
        """Whether the watch has not delivered our last write of ``key`` yet
        (so its copy is older than what the API server holds)."""
        return key in self._written_rv

    # -- requests being worked on ---------------------------------------------------

    def remember(
        self, key: str, issuer: IssuerKey, approval: tuple[bool, bool], obj: RequestT
    ) -> Entry[RequestT] | None:
        """Keep the watch's copy of ``key``; the entry it replaces, if any."""
        previous = self.entries.get(key)
        last_event = previous.last_event if previous else None
        self.entries[key] = Entry(issuer, approval, obj, last_event)
        return previous

    def new_event(self, key: str, event: tuple[str, str]) -> bool:
        """Whether ``event`` (reason, message) differs from the last one sent
        for ``key`` (then it is the last one); True for a key not kept."""
        entry = self.entries.get(key)
        if entry is None:
            return True
        if entry.last_event == event:
            return False
        self.entries[key] = replace(entry, last_event=event)
        return True

    def waiting_for(self, issuer: IssuerKey) -> list[str]:
        return [key for key, entry in self.entries.items() if entry.issuer == issuer]

    def forget(self, key: str, uid: str | None) -> str:
        """Drop ``key`` and any signature kept for it; the request's uid ("" if
        unknown), for the signer to forget too."""
        entry = self.entries.pop(key, None)
        if not uid and entry is not None:
            uid = _uid(entry.obj)
        if uid:
            self.signed.pop(uid, None)
        return uid or ""

    def deleted(self, key: str) -> None:
        self._written_rv.pop(key, None)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """After a list of ``keys``: the kept requests no longer there (to
        forget); our writes of those are dropped here."""
        listed = set(keys)
        for key in [k for k in self._written_rv if k not in listed]:
            del self._written_rv[key]
        return [k for k in self.entries if k not in listed]


def _uid(obj: HasMetadata) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
