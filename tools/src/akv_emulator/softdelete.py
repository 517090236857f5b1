"""Object names as Key Vault keeps them, and soft-delete of keys and secrets.

Names: "Key Vault ... names are case-insensitive" ("About keys, secrets and
certificates": "always compare them as case-insensitive strings"); the case given
when the object was first created is the one its identifiers keep (assumption: a
new version under another case keeps the stored case, as Key Vault's IDs do).

Soft-delete (Key Vault "soft-delete overview"; keys.json / secrets.json of
azure-rest-api-specs: DeleteKey, GetDeletedKey(s), RecoverDeletedKey,
PurgeDeletedKey and the secret equivalents): a deleted object keeps its versions
for the retention period (90 days here) and can be recovered or purged; while it
is soft-deleted its name cannot be reused: creating a key or setting a secret of
that name answers 409 Conflict ("... is currently in a deleted but recoverable
state, and its name cannot be reused; in this state, the ... can only be
recovered or purged."). Nothing is purged by time here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from aiohttp import web

from .state import now

RETENTION_DAYS = 90
_V = TypeVar("_V")


class NameDict(dict[str, _V]):
    """A dict keyed by object name, compared case-insensitively (keys stored lowercased)."""

    def __getitem__(self, name: str) -> _V:
        return super().__getitem__(name.lower())

    def __setitem__(self, name: str, value: _V) -> None:
        super().__setitem__(name.lower(), value)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    @overload  # type: ignore[override]
    def get(self, name: str) -> _V | None: ...
    @overload
    def get(self, name: str, default: _V) -> _V: ...
    def get(self, name: str, default: _V | None = None) -> _V | None:
        return super().get(name.lower(), default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        return super().setdefault(name.lower(), default)

    def pop(self, name: str, *default: Any) -> Any:
        return super().pop(name.lower(), *default)


def stored_name(store: NameDict[dict[str, Any]], name: str) -> str:
    """The case an existing object keeps; ``name`` itself for a new one."""
    versions = store.get(name)
    if versions:
        return str(next(iter(versions.values())).name)
    return name


_Item = TypeVar("_Item")


@dataclass
class Deleted(Generic[_Item]):
    """A soft-deleted key or secret: every version, and when it was deleted."""

    versions: dict[str, _Item]
    deleted: int = field(default_factory=now)

    @property
    def scheduled_purge(self) -> int:
        return self.deleted + RETENTION_DAYS * 86400

    def latest(self) -> _Item:
        return next(reversed(self.versions.values()))

    def deletion_fields(self, base: str, area: str, name: str) -> dict[str, Any]:
        return {
            "recoveryId": f"{base}/{area}/{name}",
            "deletedDate": self.deleted,
            "scheduledPurgeDate": self.scheduled_purge,
        }


def name_conflict(kind: str, name: str) -> web.Response:
    """409 on a name held by a soft-deleted object: the wording and inner code Key Vault
    uses (quoted by the Azure SDKs' own tests and by clients that parse it)."""
    return web.json_response(
        {
            "error": {
                "code": "Conflict",
                "message": f"{kind.capitalize()} {name} is currently in a deleted but "
                f"recoverable state, and its name cannot be reused; in this state, the {kind} "
                f"can only be recovered or purged.",
                "innererror": {"code": "ObjectIsDeletedButRecoverable"},
            }
        },
        status=409,
    )


def deleted_not_found(kind: str, name: str) -> web.Response:
    return web.json_response(
        {
            "error": {
                "code": f"{kind.capitalize()}NotFound",
                "message": f"Deleted {kind.capitalize()} not found: {name}",
            }
        },
        status=404,
    )


def deleted_path(request: web.Request) -> list[str]:
    """The path below /deletedkeys or /deletedsecrets, split at "/"."""
    tail = request.match_info["tail"]
    parts = tail.split("/")[1:] if tail else []
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return parts
