"""The custom Azure role definitions in deploy/azure-roles/ (docs/azure-roles.md):
exactly the data actions each task calls, in the format `az role definition create`
takes, and the docs assign these roles instead of Key Vault's broad built-in ones."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from support.deploy import REPO

ROLES = REPO / "deploy" / "azure-roles"
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", *REPO.glob("deploy/**/*.md")]
KV = "Microsoft.KeyVault/vaults/"
HSM = "Microsoft.KeyVault/managedHsm/"

# What each role may do, and nothing else (docs/azure-roles.md, "What each task calls").
EXPECTED: dict[str, set[str]] = {
    "issuer-key-signer.json": {KV + "keys/read", KV + "keys/sign/action"},
    "issuer-ca-secret-reader.json": {KV + "secrets/getSecret/action"},
    "issuer-ca-secret-renewer.json": {
        KV + "secrets/getSecret/action",
        KV + "secrets/setSecret/action",
    },
    "issuer-ca-certificate-reader.json": {KV + "certificates/read"},
    "ca-operator.json": {
        KV + "keys/read",
        KV + "keys/sign/action",
        KV + "keys/create/action",
        KV + "keys/rotate/action",
        KV + "secrets/getSecret/action",
        KV + "secrets/setSecret/action",
    },
    "managed-hsm-issuer-key-signer.json": {HSM + "keys/read/action", HSM + "keys/sign/action"},
}
# Key Vault's published data actions for vault objects that these roles may draw
# from (a typo would make `az role definition create` fail, or grant nothing).
KNOWN_VAULT_DATA_ACTIONS = (
    {
        KV + f"keys/{a}"
        for a in (
            "read",
            "create/action",
            "rotate/action",
            "sign/action",
            "verify/action",
            "update/action",
            "backup/action",
            "encrypt/action",
            "decrypt/action",
            "wrap/action",
            "unwrap/action",
        )
    }
    | {
        KV + f"secrets/{a}"
        for a in ("getSecret/action", "setSecret/action", "readMetadata/action", "update/action")
    }
    | {KV + "certificates/read"}
)
# Never in a role of ours: they let the holder take or destroy the CA key or secret.
DANGEROUS = {"backup", "delete", "purge", "import", "release", "update", "restore", "encrypt"}
BUILT_IN_ROLES = [
    "Key Vault Crypto User",
    "Key Vault Crypto Officer",
    "Key Vault Secrets User",
    "Key Vault Secrets Officer",
    "Key Vault Certificate User",
    "Key Vault Certificates Officer",
    "Key Vault Administrator",
    "Managed HSM Crypto User",
]
AZ_FIELDS = {
    "Name",
    "IsCustom",
    "Description",
    "Actions",
    "NotActions",
    "DataActions",
    "NotDataActions",
    "AssignableScopes",
}
HSM_FIELDS = {"roleName", "description", "actions", "notActions", "dataActions", "notDataActions"}


def _load(name: str) -> dict[str, Any]:
    document = json.loads((ROLES / name).read_text())
    assert isinstance(document, dict)
    return document


def _role_names() -> set[str]:
    names = set()
    for name in EXPECTED:
        document = _load(name)
        names.add(document.get("Name") or document["roleName"])
    return names


def test_every_role_file_is_expected() -> None:
    assert {p.name for p in ROLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_role_grants_exactly_its_data_actions(name: str) -> None:
    document = _load(name)
    if name.startswith("managed-hsm-"):
        # `az keyvault role definition create --hsm-name` (the HSM's local RBAC).
        assert set(document) == HSM_FIELDS
        data_actions = document["dataActions"]
        assert document["actions"] == document["notActions"] == document["notDataActions"] == []
    else:
        # `az role definition create --role-definition @file` (Azure RBAC).
        assert set(document) == AZ_FIELDS
        assert document["IsCustom"] is True
        assert document["Actions"] == document["NotActions"] == document["NotDataActions"] == []
        assert document["AssignableScopes"] == ["/subscriptions/SUBSCRIPTION_ID"]
        data_actions = document["DataActions"]
        assert set(data_actions) <= KNOWN_VAULT_DATA_ACTIONS, name
    assert len(data_actions) == len(set(data_actions)), f"{name}: duplicate data actions"
    assert set(data_actions) == EXPECTED[name]
    for action in data_actions:
        assert "*" not in action
        assert not DANGEROUS & set(action.split("/")), f"{name}: {action}"


def test_the_controller_roles_never_write_keys_and_only_the_renewer_writes_secrets() -> None:
    controller = [n for n in EXPECTED if n.startswith(("issuer-", "managed-hsm-"))]
    for name in controller:
        actions = EXPECTED[name]
        assert not {a for a in actions if "create" in a or "rotate" in a}, name
        writes = {a for a in actions if "setSecret" in a}
        assert not writes or name == "issuer-ca-secret-renewer.json"


def test_roles_doc_lists_every_file_role_name_and_data_action() -> None:
    text = (REPO / "docs" / "azure-roles.md").read_text()
    for name in EXPECTED:
        assert f"`{name}`" in text, name
        document = _load(name)
        assert (document.get("Name") or document["roleName"]) in text
    for action in set().union(*EXPECTED.values()):
        short = action.removeprefix(KV)
        assert f"`{action}`" in text or f"`.../{short}`" in text, action


@pytest.mark.parametrize("guide", ["aks-quickstart.md", "install.md", "rotation.md", "api.md"])
def test_guides_point_at_the_custom_roles(guide: str) -> None:
    assert "azure-roles.md" in (REPO / "docs" / guide).read_text()


def test_built_in_roles_are_named_only_as_the_documented_fallback() -> None:
    # The broad built-in roles appear in docs/azure-roles.md's fallback table
    # (with what they grant beyond the issuer's needs), nowhere else.
    for doc in DOCS:
        if doc.name == "azure-roles.md":
            continue
        text = doc.read_text()
        for role in BUILT_IN_ROLES:
            assert role not in text, f"{doc.relative_to(REPO)} recommends {role!r}"
    fallback = (REPO / "docs" / "azure-roles.md").read_text()
    for role in BUILT_IN_ROLES[:5]:
        assert role in fallback


def _az_lines(path: Path) -> list[list[str]]:
    text = path.read_text()
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line.startswith("az "):
                lines.append(shlex.split(line.split(" #", 1)[0]))
    return lines


def _flag(tokens: list[str], flag: str) -> str:
    return tokens[tokens.index(flag) + 1]


@pytest.mark.parametrize("guide", ["aks-quickstart.md", "azure-roles.md"])
def test_role_assignments_use_our_roles_on_one_object(guide: str) -> None:
    names = _role_names()
    lines = _az_lines(REPO / "docs" / guide)
    created = [t for t in lines if t[1:4] == ["role", "assignment", "create"]]
    deleted = {
        (_flag(t, "--role"), _flag(t, "--scope"))
        for t in lines
        if t[1:4] == ["role", "assignment", "delete"]
    }
    assert len(created) >= 2, guide
    for tokens in created:
        role, scope = _flag(tokens, "--role"), _flag(tokens, "--scope")
        assert role in names, f"{guide}: {' '.join(tokens)}"
        if re.search(r"/(keys|secrets|certificates)/\S+$", scope):
            continue  # one key, secret or certificate
        # The whole vault: only for a person, before the key exists, and taken
        # back in the same guide; never for the controller's identity.
        assert _flag(tokens, "--assignee-principal-type") == "User", f"{guide}: {scope}"
        assert (role, scope) in deleted, f"{guide}: {role} on {scope} is never narrowed"
