"""The emulator's token endpoint answers as Entra ID does, seen through the real azure-identity.

Sources: Entra ID "error codes" reference (AADSTS codes; error response fields
error, error_description, error_codes, timestamp, trace_id, correlation_id),
the OAuth 2.0 client credentials flow page (scope ``<resource>/.default``,
the error response), and azure-workload-identity's troubleshooting page
(AADSTS70021 / AADSTS700211 as ``invalid_request``). Pairs of status and error
that Microsoft does not table are assumptions written in akv_emulator/entra.py.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential, WorkloadIdentityCredential

from akv_emulator.testing import EmulatorEnv, EmulatorProcess

VAULT_SCOPE = "https://vault.azure.net/.default"


def credential(
    env: EmulatorEnv,
    *,
    tenant: str | None = None,
    client: str | None = None,
    secret: str | None = None,
) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant or env.tenant_id,
        client or env.sp_client_id,
        secret or env.sp_client_secret,
        authority=env.authority_host,
        connection_verify=env.ca_file,
        disable_instance_discovery=True,
        retry_total=0,
    )


async def refusal(cred: Any, scope: str = VAULT_SCOPE) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of the token endpoint's refusal, as the aio SDK (the
    product's) got them: the sync credentials go through MSAL, which keeps no response."""
    async with cred:
        with pytest.raises(ClientAuthenticationError) as err:
            await cred.get_token(scope)
    response = err.value.response
    assert response is not None, "azure-identity keeps the token endpoint's response"
    return response.status_code, json.loads(response.text())


def assert_entra_shape(body: dict[str, Any], error: str, code: int) -> None:
    """Entra's error response: the fields of the error codes reference, the AADSTS line
    first, then the Trace ID, Correlation ID and Timestamp lines (CRLF separated)."""
    assert body["error"] == error
    assert body["error_codes"] == [code]
    lines = body["error_description"].split("\r\n")
    assert lines[0].startswith(f"AADSTS{code}: ")
    assert lines[1] == f"Trace ID: {body['trace_id']}"
    assert lines[2] == f"Correlation ID: {body['correlation_id']}"
    assert lines[3] == f"Timestamp: {body['timestamp']}"
    assert len(lines) == 4


async def test_wrong_client_secret_is_401_invalid_client_7000215(emulator_env: EmulatorEnv) -> None:
    # Entra error codes: AADSTS7000215 "Invalid client secret provided".
    status, body = await refusal(credential(emulator_env, secret="not-the-secret"))
    assert status == 401
    assert_entra_shape(body, "invalid_client", 7000215)
    assert "not-the-secret" not in json.dumps(body)


async def test_unknown_client_is_400_unauthorized_client_700016(emulator_env: EmulatorEnv) -> None:
    # Entra error codes: AADSTS700016 "Application with identifier ... was not found".
    status, body = await refusal(
        credential(emulator_env, client="00000000-0000-4000-8000-00000000dead")
    )
    assert status == 400
    assert_entra_shape(body, "unauthorized_client", 700016)
    assert "00000000-0000-4000-8000-00000000dead" in body["error_description"]


async def test_unknown_tenant_is_400_invalid_request_90002(emulator_env: EmulatorEnv) -> None:
    # Entra error codes: AADSTS90002 "Tenant ... not found".
    tenant = "00000000-0000-4000-8000-0000000000ff"
    status, body = await refusal(credential(emulator_env, tenant=tenant))
    assert status == 400
    assert_entra_shape(body, "invalid_request", 90002)
    assert tenant in body["error_description"].splitlines()[0]


async def test_a_scope_without_default_is_invalid_scope_70011(emulator_env: EmulatorEnv) -> None:
    # Client credentials flow: the scope must be "<resource>/.default"; AADSTS70011 otherwise.
    status, body = await refusal(
        credential(emulator_env), "https://vault.azure.net/user_impersonation"
    )
    assert status == 400
    assert_entra_shape(body, "invalid_scope", 70011)


async def test_federation_mismatch_is_400_invalid_request_70021(
    emulator: EmulatorProcess, tmp_path: Any
) -> None:
    # azure-workload-identity troubleshooting: AADSTS70021, issuer/subject/audience named.
    env = emulator.env
    emulator.admin.set_identity("other-app", federated_subject="system:serviceaccount:x:y")
    token_file = tmp_path / "token"
    token_file.write_text(emulator.admin.mint_assertion("other-app"))
    cred = WorkloadIdentityCredential(
        tenant_id=env.tenant_id,
        client_id=env.workload_client_id,
        token_file_path=str(token_file),
        authority=env.authority_host,
        connection_verify=env.ca_file,
        retry_total=0,
    )
    status, body = await refusal(cred)
    assert status == 400
    assert_entra_shape(body, "invalid_request", 70021)
    first = body["error_description"].splitlines()[0]
    assert "Assertion Subject: 'system:serviceaccount:x:y'" in first


@pytest.mark.parametrize(
    ("faults", "status", "error", "code"),
    [
        ({"errors": {"next": 1, "operations": ["token"]}}, 503, "temporarily_unavailable", 90033),
        (
            {"throttle": {"next": 1, "operations": ["token"], "retry_after": 7}},
            429,
            "temporarily_unavailable",
            90055,
        ),
    ],
)
async def test_injected_token_faults_come_back_in_entras_shape(
    emulator: EmulatorProcess, faults: dict[str, Any], status: int, error: str, code: int
) -> None:
    # Entra error codes: temporarily_unavailable is retryable (assumed codes, see entra.py).
    emulator.admin.set_faults(faults)
    got, body = await refusal(credential(emulator.env))
    assert got == status
    assert_entra_shape(body, error, code)


def test_discovery_document_and_its_jwks_uri_work(emulator_env: EmulatorEnv) -> None:
    # OpenID Connect discovery: jwks_uri lists the tenant's signing keys.
    context = ssl.create_default_context(cafile=emulator_env.ca_file)
    base = f"{emulator_env.authority_host}/{emulator_env.tenant_id}"
    with urllib.request.urlopen(
        f"{base}/v2.0/.well-known/openid-configuration", context=context, timeout=10
    ) as resp:
        config = json.load(resp)
    with urllib.request.urlopen(config["jwks_uri"], context=context, timeout=10) as resp:
        jwks = json.load(resp)
    (key,) = jwks["keys"]
    assert (key["kty"], key["use"]) == ("RSA", "sig")
    assert key["kid"]
    assert key["n"]
    assert key["e"] == "AQAB"
