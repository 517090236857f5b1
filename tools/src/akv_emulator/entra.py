"""Entra ID's answers, as the token endpoint gives them: one place for their shape and codes.

Shape (Microsoft identity platform, "Error response" of the OAuth 2.0 client
credentials flow, learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
and reference-error-codes): a JSON object with ``error`` (the OAuth code),
``error_description`` (the AADSTS line, then "Trace ID", "Correlation ID" and
"Timestamp" lines joined by CRLF), ``error_codes`` (the AADSTS numbers),
``timestamp``, ``trace_id``, ``correlation_id`` and ``error_uri``.

Which ``error`` and HTTP status each AADSTS code comes with is not tabled by
Microsoft; the pairs below are the ones Entra answers in practice (reported in
azure-identity and azure-workload-identity issues and troubleshooting pages):
AADSTS7000215 (wrong client secret) ``invalid_client`` / 401; AADSTS700016
(unknown application) ``unauthorized_client`` / 400; AADSTS90002 (unknown
tenant) ``invalid_request`` / 400; AADSTS70021 and AADSTS700211 (no matching
federated identity credential) ``invalid_request`` / 400 (azure-workload-identity
troubleshooting page); AADSTS70011 (invalid scope) ``invalid_scope`` / 400.
Assumptions where nothing is documented: a busy Entra answers 503
``temporarily_unavailable`` with AADSTS90033, or 429 ``temporarily_unavailable``
with AADSTS90055 (TenantThrottlingError in the error code reference), with
``Retry-After`` when the fault sets one; other 5xx faults answer
``server_error`` with the same AADSTS90033.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from .crypto import KeyMaterial, b64url_encode, generate

# The scope of a client credentials request must be "<resource>/.default" (the
# client credentials flow page: "The value passed for the scope parameter in this
# request should be the resource identifier ... affixed with the .default suffix").
DEFAULT_SCOPE_SUFFIX = "/.default"
# OpenID Connect scopes a client may add; they are not resources.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


@dataclass(frozen=True)
class EntraRefusal:
    """One failure: HTTP status, OAuth error, AADSTS number and the description's first line."""

    status: int
    error: str
    code: int
    line: str
    retry_after: float | None = None


def entra_response(request: web.Request, refusal: EntraRefusal) -> web.Response:
    """The refusal in Entra's shape; the correlation id is the client's
    ``client-request-id`` when it sent one (as Entra echoes it), else a new one."""
    trace_id = str(uuid.uuid4())
    correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    description = "\r\n".join(
        (
            f"AADSTS{refusal.code}: {refusal.line}",
            f"Trace ID: {trace_id}",
            f"Correlation ID: {correlation_id}",
            f"Timestamp: {stamp}",
        )
    )
    body = {
        "error": refusal.error,
        "error_description": description,
        "error_codes": [refusal.code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://{request.host}/error?code={refusal.code}",
    }
    headers = {"x-ms-request-id": trace_id, "client-request-id": correlation_id}
    if refusal.retry_after is not None:
        headers["Retry-After"] = f"{refusal.retry_after:g}"
    return web.json_response(body, status=refusal.status, headers=headers)


# ---- the refusals the emulator can produce --------------------------------------------


def unknown_tenant(tenant: str) -> EntraRefusal:
    return EntraRefusal(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        f"are signing into the correct cloud.",
    )


def unsupported_grant(grant: str) -> EntraRefusal:
    return EntraRefusal(
        400,
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant}'.",
    )


def unknown_client(client_id: str, tenant: str) -> EntraRefusal:
    return EntraRefusal(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        f"This can happen if the application has not been installed by the administrator of "
        f"the tenant or consented to by any user in the tenant. You may have sent your "
        f"authentication request to the wrong tenant.",
    )


def missing_scope() -> EntraRefusal:
    return EntraRefusal(
        400, "invalid_request", 90014, "The required field 'scope' is missing from the credential."
    )


def invalid_scope(scope: str) -> EntraRefusal:
    return EntraRefusal(
        400,
        "invalid_scope",
        70011,
        f"The provided request must include a 'scope' input parameter. The provided value for "
        f"the input parameter 'scope' is not valid. The scope {scope} is not valid.",
    )


def bad_client_secret(client_id: str) -> EntraRefusal:
    return EntraRefusal(
        401,
        "invalid_client",
        7000215,
        f"Invalid client secret provided. Ensure the secret being sent in the request is the "
        f"client secret value, not the client secret ID, for a secret added to app "
        f"'{client_id}'.",
    )


def no_client_credential() -> EntraRefusal:
    return EntraRefusal(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    )


def bad_assertion_type() -> EntraRefusal:
    return EntraRefusal(
        400,
        "invalid_request",
        50027,
        "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
    )


def malformed_assertion() -> EntraRefusal:
    return EntraRefusal(400, "invalid_request", 50027, "JWT token is invalid or malformed.")


def untrusted_issuer(issuer: str) -> EntraRefusal:
    # azure-workload-identity's troubleshooting page: the issuer has no federated credential.
    return EntraRefusal(
        400,
        "invalid_request",
        700211,
        f"No matching federated identity record found for presented assertion issuer "
        f"'{issuer}'. Please note that the matching is done using a case-sensitive "
        f"comparison. Please check your federated identity credential Subject, Audience and "
        f"Issuer against the presented assertion.",
    )


def bad_assertion_signature() -> EntraRefusal:
    return EntraRefusal(
        400,
        "invalid_client",
        50013,
        "Assertion failed signature validation. [Reason - The key was not found.]",
    )


def assertion_out_of_time() -> EntraRefusal:
    return EntraRefusal(
        400, "invalid_client", 700024, "Client assertion is not within its valid time range."
    )


def oidc_endpoint_failed() -> EntraRefusal:
    # Entra's error codes page: AADSTS50166 ExternalClaimsProviderServiceUnavailable
    # ("Request to External OIDC endpoint failed"), for an issuer whose discovery
    # document or keys cannot be read. Assumption (the page gives no status or OAuth
    # error): 400 invalid_request, like the other federated-assertion refusals.
    return EntraRefusal(400, "invalid_request", 50166, "Request to External OIDC endpoint failed.")


def federation_mismatch(issuer: str, subject: str, audience: str) -> EntraRefusal:
    # azure-workload-identity's troubleshooting page: issuer known, subject or audience not.
    return EntraRefusal(
        400,
        "invalid_request",
        70021,
        f"No matching federated identity record found for presented assertion. Assertion "
        f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'.",
    )


def busy(status: int, retry_after: float | None = None) -> EntraRefusal:
    """An injected fault on the token endpoint (see the module docstring's assumptions)."""
    if status == 429:
        return EntraRefusal(
            429,
            "temporarily_unavailable",
            90055,
            "The request was throttled: too many requests were received for this tenant.",
            retry_after,
        )
    error = "temporarily_unavailable" if status == 503 else "server_error"
    return EntraRefusal(
        status,
        error,
        90033,
        "A transient error has occurred. Please try again.",
        retry_after,
    )


# ---- continuous access evaluation (CAE) -------------------------------------------------
#
# A client that can answer claims challenges says so in the token request:
# ``claims={"access_token":{"xms_cc":{"values":["CP1"]}}}`` (azure-identity
# sends it whenever the caller passes enable_cae, which the Key Vault SDK
# always does). When such a token is revoked before it expires (a disabled
# identity, a changed policy), the resource does not just refuse it: it answers
# 401 with ``error="insufficient_claims"`` and a base64 ``claims`` document
# asking for a token issued after the revocation (``nbf`` essential), and the
# client gets a fresh token with those claims, bypassing its token cache. The
# header's shape is the one Azure resources send (``Bearer realm=""``,
# ``authorization_uri``, ``error_description``, ``error``, ``claims``), as seen
# in azure-cli and azure-sdk issue reports.


def asks_for_cae(claims: object) -> bool:
    """Whether a token request's ``claims`` parameter declares the CP1 capability."""
    if not isinstance(claims, str) or not claims:
        return False
    try:
        parsed = json.loads(claims)
    except ValueError:
        return False
    values = (((parsed or {}).get("access_token") or {}).get("xms_cc") or {}).get("values")
    return isinstance(values, list) and any(str(v).upper() == "CP1" for v in values)


def cae_challenge(authority_host: str, revoked_at: float) -> str:
    """The ``WWW-Authenticate`` value for a revoked CAE token."""
    document = {"access_token": {"nbf": {"essential": True, "value": str(int(revoked_at))}}}
    claims = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return (
        f'Bearer realm="", authorization_uri="{authority_host.rstrip("/")}/common/oauth2/'
        'authorize", error_description="Continuous access evaluation resulted in challenge '
        'with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp", '
        f'error="insufficient_claims", claims="{claims}"'
    )


# ---- token signing keys (jwks_uri) ----------------------------------------------------


class SigningKeys:
    """The tenant's token signing keys as its ``jwks_uri`` lists them.

    The emulator's access tokens are opaque, so nothing is signed with this key;
    it exists so that a client reading the discovery document finds a key set
    there, as at Entra (one RSA 2048 key; ``x5c`` is left out)."""

    def __init__(self) -> None:
        self._key: KeyMaterial | None = None
        self.kid = uuid.uuid4().hex[:27]

    def jwks(self) -> dict[str, object]:
        if self._key is None:
            self._key = generate("RSA", key_size=2048, crv=None, public_exponent=None)
        jwk = self._key.public_jwk()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": b64url_encode(self.kid.encode())[:27],
                    "n": jwk["n"],
                    "e": jwk["e"],
                }
            ]
        }
