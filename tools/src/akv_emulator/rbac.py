"""Azure RBAC data actions: which one each operation needs, and role assignments.

An identity with role assignments (``PUT _emulator/identities/{id}`` with
``role_assignments``) may do exactly what one of them grants on the object at
hand, as Key Vault does on a vault with the Azure RBAC permission model; an
identity without (the default) is held to its access-policy style
``permissions`` only, which allow everything unless narrowed.

Sources: Key Vault's "Azure RBAC for Key Vault data plane operations" (the data
action of each operation, ``Microsoft.KeyVault/vaults/...``; assignments at a
vault or at one key, secret or certificate: ``<vault id>/keys/<name>``), the
Managed HSM local RBAC built-in roles page (``Microsoft.KeyVault/managedHsm/
keys/...``, scopes ``/`` and ``/keys/<name>``), and Azure RBAC's role definition
format (``DataActions`` / ``NotDataActions``, ``*`` wildcards, compared without
regard to case). Assumptions, marked below: the data actions of the soft-delete
operations and of key rotation policies on a Managed HSM, and that attestation
needs what reading the key needs (the SDK: "requires the keys/get permission").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

VAULT_PREFIX = "Microsoft.KeyVault/vaults/"
HSM_PREFIX = "Microsoft.KeyVault/managedHsm/"

# Operation (the emulator's counter name) -> the vault data action it needs.
VAULT_DATA_ACTIONS: dict[str, str] = {
    "get_key": "keys/read",
    "list_keys": "keys/read",
    "list_key_versions": "keys/read",
    "get_key_attestation": "keys/read",
    "create_key": "keys/create/action",
    "update_key": "keys/update/action",
    "sign": "keys/sign/action",
    "verify": "keys/verify/action",
    "rotate_key": "keys/rotate/action",
    "get_key_rotation_policy": "keyrotationpolicies/read",
    "update_key_rotation_policy": "keyrotationpolicies/write",
    "delete_key": "keys/delete",
    # assumption: the deleted-object data actions as the built-in Officer roles list them
    "list_deleted_keys": "deletedKeys/read",
    "get_deleted_key": "deletedKeys/read",
    "recover_deleted_key": "deletedKeys/recover/action",
    "purge_deleted_key": "deletedKeys/delete",
    "get_secret": "secrets/getSecret/action",
    "list_secrets": "secrets/readMetadata/action",
    "list_secret_versions": "secrets/readMetadata/action",
    "set_secret": "secrets/setSecret/action",
    "update_secret": "secrets/update/action",
    "delete_secret": "secrets/delete",
    "list_deleted_secrets": "deletedSecrets/read",
    "get_deleted_secret": "deletedSecrets/read",
    "recover_deleted_secret": "deletedSecrets/recover/action",
    "purge_deleted_secret": "deletedSecrets/delete",
    "get_certificate": "certificates/read",
    "import_certificate": "certificates/import/action",
}

# A Managed HSM names some of the same actions differently (its local RBAC).
_HSM_NAMES: dict[str, str] = {
    "keys/read": "keys/read/action",
    "keys/create/action": "keys/create",
    "keys/update/action": "keys/write/action",
    "deletedKeys/read": "keys/deletedKeys/read/action",
    "deletedKeys/recover/action": "keys/deletedKeys/recover/action",
    "deletedKeys/delete": "keys/deletedKeys/delete",
    # assumption: rotation policies under the key, as the HSM's other key actions
    "keyrotationpolicies/read": "keys/rotationpolicy/read/action",
    "keyrotationpolicies/write": "keys/rotationpolicy/write/action",
}

# Operations on the vault as a whole: an assignment on one object does not cover them.
VAULT_WIDE = frozenset({"list_keys", "list_secrets", "list_deleted_keys", "list_deleted_secrets"})

_SCOPE = re.compile(r"^/(?:(?P<kind>keys|secrets|certificates)/(?P<name>[0-9A-Za-z-]{1,127}))?$")


def data_action(op: str, *, managed_hsm: bool = False) -> str:
    """The full data action operation ``op`` needs, on a vault or a Managed HSM."""
    suffix = VAULT_DATA_ACTIONS[op]
    if managed_hsm:
        return HSM_PREFIX + _HSM_NAMES.get(suffix, suffix)
    return VAULT_PREFIX + suffix


def _matches(pattern: str, action: str) -> bool:
    """Azure RBAC's action matching: ``*`` matches any run of characters, no case."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, action, re.IGNORECASE) is not None


class RoleAssignmentError(ValueError):
    """A role assignment the admin API cannot take; the message says why."""


@dataclass(frozen=True)
class RoleAssignment:
    """A role's data actions assigned at ``scope``: ``/`` (the whole vault or HSM) or
    ``/keys/<name>``, ``/secrets/<name>``, ``/certificates/<name>`` (one object, as
    ``<vault id>/keys/<name>`` in Azure RBAC or ``--scope /keys/<name>`` in an HSM)."""

    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...] = ()
    scope: str = "/"
    role_name: str | None = None

    def covers(self, kind: str | None, name: str | None) -> bool:
        if self.scope == "/":
            return True
        found = _SCOPE.match(self.scope)
        assert found is not None  # checked when parsed
        return (
            kind is not None
            and name is not None
            and found["kind"] == kind
            and found["name"].lower() == name.lower()
        )

    def grants(self, action: str, kind: str | None, name: str | None) -> bool:
        return (
            self.covers(kind, name)
            and any(_matches(p, action) for p in self.data_actions)
            and not any(_matches(p, action) for p in self.not_data_actions)
        )

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "scope": self.scope,
            "data_actions": list(self.data_actions),
            "not_data_actions": list(self.not_data_actions),
        }
        if self.role_name:
            described["role_name"] = self.role_name
        return described


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RoleAssignmentError(f"{what} must be a list of data action strings")
    return tuple(value)


def parse_role_assignment(data: Any) -> RoleAssignment:
    """One assignment: ``{"scope"?, "data_actions", "not_data_actions"?}``, or
    ``{"scope"?, "role_definition": <a role definition as az takes it>}`` (Azure RBAC's
    ``Name``/``DataActions``/``NotDataActions``, or an HSM's ``roleName``/``dataActions``/
    ``notDataActions``), so that a test can assign a role file as it is."""
    if not isinstance(data, dict):
        raise RoleAssignmentError("each role assignment must be a JSON object")
    unknown = sorted(set(data) - {"scope", "data_actions", "not_data_actions", "role_definition"})
    if unknown:
        raise RoleAssignmentError(f"unknown role assignment field(s): {', '.join(unknown)}")
    scope = data.get("scope") or "/"
    if not isinstance(scope, str) or _SCOPE.match(scope) is None:
        raise RoleAssignmentError(
            "scope must be '/' or '/keys/<name>', '/secrets/<name>', '/certificates/<name>'"
        )
    definition = data.get("role_definition")
    if definition is not None:
        if "data_actions" in data or "not_data_actions" in data:
            raise RoleAssignmentError("give role_definition or data_actions, not both")
        if not isinstance(definition, dict):
            raise RoleAssignmentError("role_definition must be a JSON object")
        actions = _strings(
            definition.get("DataActions", definition.get("dataActions")), "DataActions"
        )
        denied = _strings(
            definition.get("NotDataActions", definition.get("notDataActions")), "NotDataActions"
        )
        name = definition.get("Name", definition.get("roleName"))
        role_name = str(name) if name else None
    else:
        actions = _strings(data.get("data_actions"), "data_actions")
        denied = _strings(data.get("not_data_actions"), "not_data_actions")
        role_name = None
    if not actions:
        raise RoleAssignmentError("a role assignment needs at least one data action")
    for action in (*actions, *denied):
        if not action.lower().startswith("microsoft.keyvault/"):
            raise RoleAssignmentError(f"{action!r} is not a Key Vault data action")
    return RoleAssignment(actions, denied, scope, role_name)


def parse_role_assignments(data: Any) -> list[RoleAssignment] | None:
    """``null``: no RBAC assignments (the access-policy permissions alone decide)."""
    if data is None:
        return None
    if not isinstance(data, list):
        raise RoleAssignmentError("role_assignments must be a list or null")
    return [parse_role_assignment(item) for item in data]


def allows(
    assignments: list[RoleAssignment], action: str, kind: str | None, name: str | None
) -> bool:
    """Whether any of ``assignments`` grants ``action`` on the object ``kind``/``name``
    (both None for an operation on the vault as a whole)."""
    return any(a.grants(action, kind, name) for a in assignments)
