"""Rules every Key Vault data-plane request meets: api-version, names, size limits,
response headers, and the vault-wide refusals (permission model, firewall).

Sources, each next to what it rules:
- azure-rest-api-specs, specification/keyvault/data-plane/Microsoft.KeyVault/stable/
  (one folder per stable api-version; keys.json/secrets.json: ``api-version`` is a
  required query parameter of every operation; names match ``^[0-9a-zA-Z-]+$``).
- Key Vault "About keys, secrets and certificates" (names 1-127 characters, letters,
  digits and dashes, compared case-insensitively; at most 15 tags, names up to 512
  and values up to 256 characters) and "About Azure Key Vault secrets" (a secret value
  is at most 25k bytes); Key Vault's service limits page (contentType up to 255).
- Key Vault "Authentication, requests and responses" (``x-ms-request-id`` and the
  ``x-ms-keyvault-*`` headers of every answer) and "Common error codes"
  (``AccessDenied`` for access policies, ``ForbiddenByFirewall``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Every stable data-plane version of azure-rest-api-specs, which include the
# defaults of the pinned SDKs (azure-keyvault-keys 4.11: 2025-07-01;
# azure-keyvault-secrets and -certificates 4.12: 2026-04-01). One list, used
# by the check and by the admin API's default.
SUPPORTED_API_VERSIONS: tuple[str, ...] = (
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
    "2026-04-01",
)

MAX_NAME_LENGTH = 127
NAME_PATTERN = re.compile(rf"^[0-9a-zA-Z-]{{1,{MAX_NAME_LENGTH}}}$")
MAX_SECRET_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE_LENGTH = 255
MAX_TAGS = 15
MAX_TAG_NAME_LENGTH = 512
MAX_TAG_VALUE_LENGTH = 256

# Clock skew allowed around a key's nbf and exp at sign time. "About keys" takes the
# JWK attributes' wording: the key must not be used before nbf / after exp, and
# "implementations MAY provide for some small leeway, usually no more than a few
# minutes, to account for clock skew". How much Key Vault allows is not published;
# assumption: 5 minutes, the usual JWT validation default.
KEY_VALIDITY_LEEWAY = 300

PERMISSION_MODELS = ("rbac", "access_policy")


def valid_name(name: str) -> bool:
    return NAME_PATTERN.match(name) is not None


def bad_parameter(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadParameter", "message": message}}, status=400)


def api_version_refusal(request: web.Request, supported: tuple[str, ...]) -> web.Response | None:
    """400 BadParameter when the request has no api-version or one the vault does not
    serve. An unserved one is worded as Key Vault words it ("The specified version (X)
    is not recognized. Consider using the latest supported version (Y).", as quoted by
    clients that parse it); the wording for a missing one is an assumption."""
    given = request.query.get("api-version")
    if not given:
        return bad_parameter(
            "The api-version query parameter is missing; it is required on every request."
        )
    if given not in supported:
        return bad_parameter(
            f"The specified version ({given}) is not recognized. Consider using the latest "
            f"supported version ({supported[-1]})."
        )
    return None


def tags_problem(tags: Any) -> str | None:
    if tags is None:
        return None
    if not isinstance(tags, dict):
        return "The parameter 'tags' must be an object."
    if len(tags) > MAX_TAGS:
        return f"Too many tags: {len(tags)} given, at most {MAX_TAGS} are allowed."
    for name, value in tags.items():
        if len(str(name)) > MAX_TAG_NAME_LENGTH:
            return f"A tag name is longer than {MAX_TAG_NAME_LENGTH} characters."
        if len(str(value)) > MAX_TAG_VALUE_LENGTH:
            return f"The value of tag '{name}' is longer than {MAX_TAG_VALUE_LENGTH} characters."
    return None


def secret_problem(value: str, content_type: Any) -> str | None:
    if len(value.encode()) > MAX_SECRET_VALUE_BYTES:
        return (
            f"The secret value is {len(value.encode())} bytes; the maximum is "
            f"{MAX_SECRET_VALUE_BYTES} bytes (25k)."
        )
    if isinstance(content_type, str) and len(content_type) > MAX_CONTENT_TYPE_LENGTH:
        return f"The contentType is longer than {MAX_CONTENT_TYPE_LENGTH} characters."
    return None


# ---- response headers ---------------------------------------------------------------

SERVICE_VERSION = "1.9.2026.1"  # the build Key Vault reports; any value of that form
REGION = "local"


def add_vault_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The headers Key Vault puts on every data-plane answer (errors included)."""
    response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
    response.headers["x-ms-keyvault-region"] = REGION
    response.headers["x-ms-keyvault-service-version"] = SERVICE_VERSION
    peer = request.remote or "127.0.0.1"
    family = "InterNetworkV6" if ":" in peer else "InterNetwork"
    kind = "Ipv6" if ":" in peer else "Ipv4"
    response.headers["x-ms-keyvault-network-info"] = (
        f"conn_type={kind};addr={peer};act_addr_fam={family};"
    )
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id:
        response.headers["x-ms-client-request-id"] = client_request_id


# ---- vault-wide settings: permission model, firewall, served versions -----------------


@dataclass
class VaultSettings:
    """What the admin API can change about the vault as a whole.

    ``permission_model``: "rbac" (403 inner ``ForbiddenByRbac``) or "access_policy"
    (403 inner ``AccessDenied``, Key Vault's common error codes page: "You may be
    missing permissions in access policy"). ``firewall``: refuse every authenticated
    call with 403 ``ForbiddenByFirewall`` (the challenge round trip still answers 401:
    assumption, the firewall is applied to callers Key Vault has identified).
    ``api_versions``: the versions served (a sovereign cloud or Azure Stack Hub lags).
    ``key_attestation``: a Managed HSM serves key attestation (false: it answers 400,
    as an HSM platform without it would; assumption, Microsoft documents no error).
    """

    permission_model: str = "rbac"
    firewall: bool = False
    api_versions: tuple[str, ...] = field(default=SUPPORTED_API_VERSIONS)
    key_attestation: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "permission_model": self.permission_model,
            "firewall": self.firewall,
            "api_versions": list(self.api_versions),
            "key_attestation": self.key_attestation,
        }


class SettingsError(ValueError):
    pass


def parse_settings(data: Any, current: VaultSettings) -> VaultSettings:
    if not isinstance(data, dict):
        raise SettingsError("the vault settings must be a JSON object")
    unknown = sorted(
        set(data) - {"permission_model", "firewall", "api_versions", "key_attestation"}
    )
    if unknown:
        raise SettingsError(f"unknown vault setting(s): {', '.join(unknown)}")
    model = data.get("permission_model", current.permission_model)
    if model not in PERMISSION_MODELS:
        raise SettingsError(f"permission_model must be one of {', '.join(PERMISSION_MODELS)}")
    firewall = data.get("firewall", current.firewall)
    if not isinstance(firewall, bool):
        raise SettingsError("firewall must be true or false")
    versions = data.get("api_versions", list(current.api_versions))
    if versions is None:
        versions = list(SUPPORTED_API_VERSIONS)
    if (
        not isinstance(versions, list)
        or not versions
        or not all(isinstance(v, str) and v in SUPPORTED_API_VERSIONS for v in versions)
    ):
        raise SettingsError(
            f"api_versions must be a non-empty list drawn from {', '.join(SUPPORTED_API_VERSIONS)}"
        )
    ordered = tuple(v for v in SUPPORTED_API_VERSIONS if v in versions)
    attestation = data.get("key_attestation", current.key_attestation)
    if not isinstance(attestation, bool):
        raise SettingsError("key_attestation must be true or false")
    return VaultSettings(model, firewall, ordered, attestation)


def forbidden(message: str, inner: str) -> web.Response:
    return web.json_response(
        {"error": {"code": "Forbidden", "message": message, "innererror": {"code": inner}}},
        status=403,
    )


def firewall_refusal(request: web.Request, client_id: str) -> web.Response:
    host = request.host.split(":")[0]
    return forbidden(
        f"Client address is not authorized and caller is not a trusted service.\r\n"
        f"Client address: {request.remote or 'unknown'}\r\n"
        f"Caller: appid={client_id}\r\n"
        f"Vault: {host.split('.')[0]};location={REGION}",
        "ForbiddenByFirewall",
    )


def permission_refusal(
    settings: VaultSettings,
    request: web.Request,
    client_id: str,
    area: str,
    action: str,
    *,
    data_action: str,
    resource: str,
    tenant_id: str,
) -> web.Response:
    """403 for a missing permission, worded as Key Vault words it for the vault's
    permission model. Access policies: "The user, group or application '...' does not
    have keys sign permission on key vault '...'" (``AccessDenied``). Azure RBAC: the
    refused data action and resource in the lines Azure RBAC writes ("Caller is not
    authorized to perform action on resource.", ``Action: '<data action>'``,
    ``Resource: '<id>'``, ``Assignment: (not found)``, ``DecisionReason``;
    ``ForbiddenByRbac``), as quoted in Key Vault users' reports of the error."""
    host = request.host.split(":")[0]
    vault = host.split(".")[0]
    if settings.permission_model == "access_policy":
        return forbidden(
            f"The user, group or application 'appid={client_id};iss=https://sts.windows.net/"
            f"{tenant_id}/' does not have {area} {action} permission on key vault "
            f"'{vault};location={REGION}'. For help resolving this issue, please see "
            f"https://go.microsoft.com/fwlink/?linkid=2125287",
            "AccessDenied",
        )
    return forbidden(
        f"Caller is not authorized to perform action on resource.\r\n"
        f"If role assignments, deny assignments or role definitions were changed recently, "
        f"please observe propagation time.\r\n"
        f"Caller: appid={client_id};iss=https://sts.windows.net/{tenant_id}/\r\n"
        f"Action: '{data_action}'\r\n"
        f"Resource: '{resource}'\r\n"
        f"Assignment: (not found)\r\n"
        f"DenyAssignmentId: null\r\n"
        f"DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
        f"Vault: {vault};location={REGION}\r\n",
        "ForbiddenByRbac",
    )
