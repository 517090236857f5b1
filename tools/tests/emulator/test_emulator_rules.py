"""Key Vault's request rules in the emulator, through the real (sync) Azure SDK clients:
api-version, case-insensitive names, soft-delete, 403 inner codes, size limits,
response headers and the key validity leeway. Each test names its source."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from akv_emulator.rules import SUPPORTED_API_VERSIONS
from akv_emulator.testing import EmulatorEnv, EmulatorProcess
from support.emulator import digest_for


def keys(env: EmulatorEnv, **kwargs: Any) -> KeyClient:
    return KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file, **kwargs)


def secrets(env: EmulatorEnv, **kwargs: Any) -> SecretClient:
    return SecretClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file, **kwargs)


def raw_get(env: EmulatorEnv, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """An unauthenticated GET: its status, JSON body and headers."""
    context = ssl.create_default_context(cafile=env.ca_file)
    try:
        with urllib.request.urlopen(f"{env.vault_url}{path}", context=context, timeout=10) as r:
            return r.status, json.load(r), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


# ---- api-version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["", "?api-version=", "?api-version=bogus", "?api-version=2099-01-01"]
)
def test_a_missing_or_unsupported_api_version_is_400_bad_parameter(
    emulator_env: EmulatorEnv, query: str
) -> None:
    # keys.json (azure-rest-api-specs stable/*): api-version is a required query parameter.
    status, body, _ = raw_get(emulator_env, f"/keys/anything{query}")
    assert status == 400
    assert body["error"]["code"] == "BadParameter"
    message = body["error"]["message"]
    if query.endswith(("bogus", "2099-01-01")):
        # Key Vault's wording, as clients that parse it quote it.
        version = query.rsplit("=", 1)[1]
        assert message == (
            f"The specified version ({version}) is not recognized. Consider using the latest "
            f"supported version ({SUPPORTED_API_VERSIONS[-1]})."
        )
    else:
        assert "api-version" in message


@pytest.mark.parametrize("version", ["7.0", "7.4", "2025-07-01"])
def test_the_sdk_works_with_each_supported_api_version(
    emulator_env: EmulatorEnv, unique_name: str, version: str
) -> None:
    # The stable versions of azure-rest-api-specs (one list: akv_emulator.rules).
    assert version in SUPPORTED_API_VERSIONS
    client = keys(emulator_env, api_version=version)
    created = client.create_ec_key(unique_name)
    assert client.get_key(unique_name).id == created.id


def test_a_vault_serving_older_versions_refuses_the_sdk_default(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    # An Azure Stack Hub / lagging cloud vault: the SDK's default version gets 400.
    emulator.admin.set_vault(api_versions=["2016-10-01", "7.0"])
    with pytest.raises(HttpResponseError) as err:
        keys(emulator.env).get_key(unique_name)
    assert err.value.status_code == 400
    assert "supported version (7.0)" in str(err.value)
    assert keys(emulator.env, api_version="7.0").create_ec_key(unique_name).name == unique_name


# ---- names --------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_keep_their_stored_case(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # "About keys, secrets and certificates": compare names as case-insensitive strings.
    name = f"Mixed-{unique_name}"
    client = keys(emulator_env)
    created = client.create_rsa_key(name)
    found = client.get_key(name.upper())
    assert found.id == created.id
    assert f"/keys/{name}/" in str(found.id)
    again = client.create_rsa_key(name.lower())  # a new version of the same key
    assert f"/keys/{name}/" in str(again.id)
    assert len(list(client.list_properties_of_key_versions(name.swapcase()))) == 2
    crypto = CryptographyClient(
        f"{emulator_env.vault_url}/keys/{name.lower()}",
        emulator_env.sp_credential(),
        connection_verify=emulator_env.ca_file,
    )
    result = crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    assert f"/keys/{name}/" in str(result.key_id)
    secret_client = secrets(emulator_env)
    secret_client.set_secret(name, "v1")
    assert secret_client.get_secret(name.lower()).value == "v1"


@pytest.mark.parametrize("name", ["a" * 128, "under_score", "dot.ted"])
def test_names_outside_1_to_127_letters_digits_and_dashes_are_refused(
    emulator_env: EmulatorEnv, name: str
) -> None:
    # keys.json/secrets.json: names match ^[0-9a-zA-Z-]+$; "About keys...": 1-127 characters.
    with pytest.raises(HttpResponseError) as err:
        secrets(emulator_env).set_secret(name, "x")
    assert err.value.status_code == 400


# ---- soft-delete ----------------------------------------------------------------------------


def test_keys_soft_delete_recover_and_purge(emulator_env: EmulatorEnv, unique_name: str) -> None:
    # Key Vault soft-delete overview; keys.json DeleteKey/GetDeletedKey/RecoverDeletedKey/Purge.
    client = keys(emulator_env)
    created = client.create_ec_key(unique_name)
    deleted = client.begin_delete_key(unique_name, _polling_interval=0).result()
    assert deleted.recovery_id
    assert deleted.scheduled_purge_date
    assert deleted.deleted_date
    assert client.get_deleted_key(unique_name).id == created.id
    assert unique_name in {k.name for k in client.list_deleted_keys()}
    with pytest.raises(ResourceNotFoundError):
        client.get_key(unique_name)
    with pytest.raises(ResourceExistsError) as err:
        client.create_ec_key(unique_name)
    assert err.value.status_code == 409
    assert "deleted but recoverable state" in str(err.value)
    assert _inner_code(err.value) == "ObjectIsDeletedButRecoverable"
    recovered = client.begin_recover_deleted_key(unique_name, _polling_interval=0).result()
    assert recovered.id == created.id
    client.begin_delete_key(unique_name, _polling_interval=0).result()
    client.purge_deleted_key(unique_name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key(unique_name)
    assert client.create_ec_key(unique_name).id != created.id


def test_secrets_soft_delete_recover_and_purge(emulator_env: EmulatorEnv, unique_name: str) -> None:
    # Key Vault soft-delete overview; secrets.json DeleteSecret/GetDeletedSecret/Recover/Purge.
    client = secrets(emulator_env)
    client.set_secret(unique_name, "pem")
    client.begin_delete_secret(unique_name, _polling_interval=0).result()
    assert client.get_deleted_secret(unique_name.upper()).name == unique_name
    with pytest.raises(ResourceExistsError) as err:
        client.set_secret(unique_name, "other")
    assert "deleted but recoverable state" in str(err.value)
    client.begin_recover_deleted_secret(unique_name, _polling_interval=0).result()
    assert client.get_secret(unique_name).value == "pem"
    client.begin_delete_secret(unique_name, _polling_interval=0).result()
    client.purge_deleted_secret(unique_name)
    assert client.set_secret(unique_name, "new").value == "new"


# ---- 403 inner codes -------------------------------------------------------------------------


def _inner_code(err: HttpResponseError) -> str:
    assert err.response is not None
    return str(json.loads(err.response.text())["error"]["innererror"]["code"])


@pytest.mark.parametrize(
    ("model", "inner"), [("rbac", "ForbiddenByRbac"), ("access_policy", "AccessDenied")]
)
def test_a_missing_permission_is_403_with_the_permission_models_inner_code(
    emulator: EmulatorProcess, unique_name: str, model: str, inner: str
) -> None:
    # Key Vault common error codes: AccessDenied for access policies; RBAC: ForbiddenByRbac.
    env = emulator.env
    emulator.admin.set_vault(permission_model=model)
    emulator.admin.set_identity(env.sp_client_id, secret_permissions=["set"])
    with pytest.raises(HttpResponseError) as err:
        secrets(env).get_secret(unique_name)
    assert err.value.status_code == 403
    assert _inner_code(err.value) == inner


def test_the_firewall_refuses_with_forbidden_by_firewall(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    # Key Vault common error codes: ForbiddenByFirewall, "Client address isn't authorized".
    emulator.admin.set_vault(firewall=True)
    with pytest.raises(HttpResponseError) as err:
        keys(emulator.env).get_key(unique_name)
    assert err.value.status_code == 403
    assert _inner_code(err.value) == "ForbiddenByFirewall"
    assert "Client address is not authorized" in str(err.value)


def test_disabled_key_and_secret_are_refused_at_use(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # keys.json/secrets.json attributes.enabled; the vault answers 403 KeyDisabled/SecretDisabled.
    client = keys(emulator_env)
    key = client.create_rsa_key(unique_name)
    client.update_key_properties(unique_name, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        CryptographyClient(
            key, emulator_env.sp_credential(), connection_verify=emulator_env.ca_file
        ).sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    assert (err.value.status_code, _inner_code(err.value)) == (403, "KeyDisabled")
    secret_client = secrets(emulator_env)
    secret_client.set_secret(unique_name, "x", enabled=False)
    with pytest.raises(HttpResponseError) as err:
        secret_client.get_secret(unique_name)
    assert (err.value.status_code, _inner_code(err.value)) == (403, "SecretDisabled")


# ---- size limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        ("x" * (25 * 1024 + 1), {}),
        ("x", {"content_type": "t" * 256}),
        ("x", {"tags": {f"t{i}": "v" for i in range(16)}}),
    ],
    ids=["value-over-25k", "content-type-over-255", "16-tags"],
)
def test_secret_size_limits_are_enforced(
    emulator_env: EmulatorEnv, unique_name: str, value: str, kwargs: dict[str, Any]
) -> None:
    # "About Azure Key Vault secrets": value up to 25k bytes; "About keys, secrets and
    # certificates": at most 15 tags; service limits: contentType up to 255 characters.
    with pytest.raises(HttpResponseError) as err:
        secrets(emulator_env).set_secret(unique_name, value, **kwargs)
    assert err.value.status_code == 400


def test_limits_themselves_are_accepted(emulator_env: EmulatorEnv, unique_name: str) -> None:
    secret = secrets(emulator_env).set_secret(
        unique_name,
        "x" * (25 * 1024),
        content_type="t" * 255,
        tags={f"t{i}": "v" for i in range(15)},
    )
    assert len(secret.value or "") == 25 * 1024


# ---- headers and leeway ---------------------------------------------------------------


def test_every_answer_carries_the_request_id_and_keyvault_headers(
    emulator_env: EmulatorEnv,
) -> None:
    # "Authentication, requests and responses": x-ms-request-id, x-ms-keyvault-region,
    # x-ms-keyvault-service-version and x-ms-keyvault-network-info on every answer.
    status, _, headers = raw_get(emulator_env, "/keys?api-version=2025-07-01")
    assert status == 401
    lowered = {k.lower(): v for k, v in headers.items()}
    assert len(lowered["x-ms-request-id"]) == 36
    assert lowered["x-ms-keyvault-region"]
    assert lowered["x-ms-keyvault-service-version"]
    assert "addr=127.0.0.1" in lowered["x-ms-keyvault-network-info"]


def test_sign_tolerates_clock_skew_around_nbf_and_exp(
    emulator_env: EmulatorEnv, unique_name: str
) -> None:
    # "About keys" (JWK nbf/exp): a small leeway, "usually no more than a few minutes";
    # the emulator allows 5 minutes (akv_emulator.rules.KEY_VALIDITY_LEEWAY).
    client = keys(emulator_env)
    now = dt.datetime.now(dt.UTC)
    key = client.create_rsa_key(unique_name, not_before=now + dt.timedelta(seconds=60))
    crypto = CryptographyClient(
        key, emulator_env.sp_credential(), connection_verify=emulator_env.ca_file
    )
    assert crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256")).signature
    client.update_key_properties(
        unique_name, not_before=now, expires_on=now - dt.timedelta(seconds=60)
    )
    assert crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256")).signature
    client.update_key_properties(unique_name, expires_on=now - dt.timedelta(minutes=10))
    with pytest.raises(HttpResponseError) as err:
        crypto.sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    assert (err.value.status_code, _inner_code(err.value)) == (403, "KeyExpired")
