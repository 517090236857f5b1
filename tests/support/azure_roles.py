"""The custom Azure roles of deploy/azure-roles/ as emulator role assignments.

Tests assign the role files as they are (read here, never restated), so a role
that misses a data action the code needs fails a test, and so does code that
starts calling something a role does not grant. The emulator enforces them
(akv_emulator.rbac; docs/emulator.md, "Azure RBAC role assignments").
"""

from __future__ import annotations

import json
from typing import Any

from .deploy import REPO

ROLES = REPO / "deploy" / "azure-roles"


def role_definition(file_name: str) -> dict[str, Any]:
    document = json.loads((ROLES / file_name).read_text())
    assert isinstance(document, dict)
    return document


def data_actions(file_name: str) -> list[str]:
    """The role's data actions (Azure RBAC's ``DataActions``, an HSM's ``dataActions``)."""
    document = role_definition(file_name)
    actions = document.get("DataActions", document.get("dataActions"))
    assert isinstance(actions, list), file_name
    assert actions, file_name
    return [str(a) for a in actions]


def assignment(file_name: str, scope: str) -> dict[str, Any]:
    """The role file assigned at ``scope`` (``/keys/<name>``, ``/secrets/<name>``,
    ``/certificates/<name>`` or ``/`` for the whole vault)."""
    return {"scope": scope, "role_definition": role_definition(file_name)}


def assignments_without(file_name: str, scope: str, missing: str) -> list[dict[str, Any]]:
    """The role file assigned at ``scope`` with one of its data actions taken out (no
    assignment at all when that was its only one)."""
    actions = data_actions(file_name)
    assert missing in actions, f"{file_name} does not grant {missing}"
    rest = [a for a in actions if a != missing]
    return [{"scope": scope, "data_actions": rest}] if rest else []
