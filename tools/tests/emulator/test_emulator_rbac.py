"""Azure RBAC in the emulator: per-identity role assignments of data actions, scoped to
the vault or to one key, secret or certificate, through the real Azure SDK.

Sources: Key Vault's "Azure RBAC for Key Vault data plane operations" (the data
action of each call, per-object scopes), Azure RBAC's role definition format
(DataActions, NotDataActions, wildcards), and the 403 Key Vault answers on a vault
with the RBAC permission model (Forbidden / ForbiddenByRbac, the refused action and
resource named in the message, as users' reports quote it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from akv_emulator.testing import EmulatorEnv, EmulatorError, EmulatorProcess
from support.azure_roles import assignment, assignments_without
from support.emulator import digest_for

KV = "Microsoft.KeyVault/vaults/"


def _keys(env: EmulatorEnv, credential: Any) -> KeyClient:
    return KeyClient(env.vault_url, credential, connection_verify=env.ca_file)


def _secrets(env: EmulatorEnv, credential: Any) -> SecretClient:
    return SecretClient(env.vault_url, credential, connection_verify=env.ca_file)


def _error(err: HttpResponseError) -> dict[str, Any]:
    assert err.response is not None
    error = json.loads(err.response.text())["error"]
    assert isinstance(error, dict)
    return error


def _refused(call: Any, action: str, resource_tail: str) -> None:
    with pytest.raises(HttpResponseError) as caught:
        call()
    assert caught.value.status_code == 403
    error = _error(caught.value)
    assert error["code"] == "Forbidden"
    assert error["innererror"]["code"] == "ForbiddenByRbac"
    message = error["message"]
    assert message.startswith("Caller is not authorized to perform action on resource.")
    assert f"Action: '{action}'" in message
    assert "Resource: '/subscriptions/" in message
    assert message.split("Resource: '", 1)[1].split("'", 1)[0].endswith(resource_tail)
    assert "Assignment: (not found)" in message


RESTRICTED = "7e3a1f00-0000-4000-8000-0000000000c1"


@dataclass
class Setup:
    emulator: EmulatorProcess
    name: str
    other: str
    credential: Any
    """The identity given role assignments (the service principal made the objects)."""

    @property
    def env(self) -> EmulatorEnv:
        return self.emulator.env

    def assign(self, assignments: list[dict[str, Any]] | None) -> None:
        self.emulator.admin.set_role_assignments(RESTRICTED, assignments)


@pytest.fixture
def setup(emulator: EmulatorProcess, unique_name: str) -> Setup:
    env = emulator.env
    admin = _keys(env, env.sp_credential())
    other = f"{unique_name}-other"
    admin.create_rsa_key(unique_name, size=2048)
    admin.create_rsa_key(other, size=2048)
    _secrets(env, env.sp_credential()).set_secret(unique_name, "ca-pem")
    _secrets(env, env.sp_credential()).set_secret(other, "not-ours")
    secret = emulator.admin.set_identity(RESTRICTED, secret=True)["secret"]
    credential = env.sp_credential(client_id=RESTRICTED, client_secret=secret)
    return Setup(emulator, unique_name, other, credential)


def test_without_assignments_everything_is_allowed(setup: Setup) -> None:
    described = {i["client_id"]: i for i in setup.emulator.admin.identities()}
    assert described[RESTRICTED]["role_assignments"] is None
    assert _keys(setup.env, setup.credential).get_key(setup.other).name == setup.other
    assert _secrets(setup.env, setup.credential).get_secret(setup.other).value == "not-ours"


def test_the_signer_role_on_one_key_reads_and_signs_that_key_only(setup: Setup) -> None:
    name, other, env, credential = setup.name, setup.other, setup.env, setup.credential
    setup.assign(
        [
            assignment("issuer-key-signer.json", f"/keys/{name}"),
            assignment("issuer-ca-secret-reader.json", f"/secrets/{name}"),
        ]
    )
    described = {i["client_id"]: i for i in setup.emulator.admin.identities()}
    assert [a["role_name"] for a in described[RESTRICTED]["role_assignments"]] == [
        "azure-keyvault-issuer key signer",
        "azure-keyvault-issuer CA secret reader",
    ]
    keys = _keys(env, credential)
    key = keys.get_key(name.upper())  # names compare without case, scopes too
    crypto = CryptographyClient(key, credential, connection_verify=env.ca_file)
    assert crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256")).signature
    assert _secrets(env, credential).get_secret(name).value == "ca-pem"
    # Nothing else: another key or secret, the list of keys, key or secret updates.
    _refused(lambda: keys.get_key(other), KV + "keys/read", f"/keys/{other}")
    _refused(
        lambda: _secrets(env, credential).get_secret(other),
        KV + "secrets/getSecret/action",
        f"/secrets/{other}",
    )
    _refused(lambda: list(keys.list_properties_of_keys()), KV + "keys/read", "/vaults/127")
    _refused(
        lambda: keys.update_key_properties(name, enabled=False),
        KV + "keys/update/action",
        f"/keys/{name}",
    )
    _refused(
        lambda: _secrets(env, credential).set_secret(name, "x"),
        KV + "secrets/setSecret/action",
        f"/secrets/{name}",
    )


def test_each_data_action_of_the_signer_role_is_needed(setup: Setup) -> None:
    name, env, credential = setup.name, setup.env, setup.credential
    key = _keys(env, env.sp_credential()).get_key(name)
    setup.assign(
        assignments_without("issuer-key-signer.json", f"/keys/{name}", KV + "keys/sign/action")
    )
    assert _keys(env, credential).get_key(name).id == key.id
    crypto = CryptographyClient(key, credential, connection_verify=env.ca_file)
    _refused(
        lambda: crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256")),
        KV + "keys/sign/action",
        f"/keys/{name}",
    )
    setup.assign(assignments_without("issuer-key-signer.json", f"/keys/{name}", KV + "keys/read"))
    _refused(lambda: _keys(env, credential).get_key(name), KV + "keys/read", f"/keys/{name}")


def test_vault_scope_wildcards_and_not_data_actions(setup: Setup) -> None:
    name, other, env, credential = setup.name, setup.other, setup.env, setup.credential
    setup.assign(
        [
            {
                "scope": "/",
                "data_actions": [KV + "secrets/*", KV.lower() + "KEYS/read"],
                "not_data_actions": [KV + "secrets/setSecret/action"],
            }
        ]
    )
    assert _secrets(env, credential).get_secret(other).value == "not-ours"
    assert {k.name for k in _keys(env, credential).list_properties_of_keys()} >= {name, other}
    _refused(
        lambda: _secrets(env, credential).set_secret(other, "x"),
        KV + "secrets/setSecret/action",
        f"/secrets/{other}",
    )
    # None again: everything is allowed.
    setup.assign(None)
    assert _secrets(env, credential).set_secret(other, "x").value == "x"


def test_an_empty_list_of_assignments_allows_nothing(setup: Setup) -> None:
    setup.assign([])
    _refused(
        lambda: _keys(setup.env, setup.credential).get_key(setup.name),
        KV + "keys/read",
        f"/keys/{setup.name}",
    )


def test_a_vault_on_access_policies_ignores_role_assignments(setup: Setup) -> None:
    setup.assign([])
    setup.emulator.admin.set_vault(permission_model="access_policy")
    assert _keys(setup.env, setup.credential).get_key(setup.name).name == setup.name
    # ... and names the access-policy permission when one is missing.
    setup.emulator.admin.set_identity(RESTRICTED, key_permissions=["list"])
    with pytest.raises(HttpResponseError) as caught:
        _keys(setup.env, setup.credential).get_key(setup.name)
    error = _error(caught.value)
    assert error["innererror"]["code"] == "AccessDenied"
    assert "does not have keys get permission on key vault" in error["message"]
    assert "https://go.microsoft.com/fwlink/?linkid=2125287" in error["message"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"role_assignments": {"scope": "/"}}, "must be a list"),
        ({"role_assignments": [{"scope": "/vaults/x", "data_actions": [KV]}]}, "scope must be"),
        ({"role_assignments": [{"data_actions": []}]}, "at least one data action"),
        ({"role_assignments": [{"data_actions": ["Microsoft.Storage/x"]}]}, "not a Key Vault"),
        ({"role_assignments": [{"role_definition": {"DataActions": "x"}}]}, "DataActions"),
        ({"role_assignments": [{"scope": "/", "actions": [KV]}]}, "unknown role assignment"),
    ],
)
def test_bad_role_assignments_are_refused_by_the_admin_api(
    emulator: EmulatorProcess, body: dict[str, Any], problem: str
) -> None:
    with pytest.raises(EmulatorError, match="HTTP 400") as caught:
        emulator.admin.call("PUT", f"identities/{emulator.env.workload_client_id}", body)
    assert problem in str(caught.value)
