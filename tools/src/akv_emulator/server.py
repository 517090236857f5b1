"""The emulator's HTTPS server: Key Vault data plane, Entra-like token endpoint, admin API.

Besides a vault it plays a Managed HSM (``--managed-hsm``, or any host name
containing ``.managedhsm.``): keys only, so the code that reads a CA
certificate from elsewhere is tested against the answer a real HSM gives; and,
with ``--proxy``, it resolves the cloud host names it carries in its TLS
certificate (``myvault.vault.azure.cn``, ``login.chinacloudapi.cn``) through a
CONNECT proxy of its own, so sovereign-cloud and HSM host names reach it
without touching /etc/hosts and with TLS and the SDK's challenge check on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from . import attestation, crypto, entra, rbac, rules
from .discovery import DiscoveryTrust
from .faults import ConnectionFaults
from .proxy import NameProxy
from .softdelete import (
    Deleted,
    NameDict,
    deleted_not_found,
    deleted_path,
    name_conflict,
    stored_name,
)
from .state import (
    CERTIFICATE_PERMISSIONS,
    DEFAULT_LIFETIME_ACTIONS,
    DEFAULT_TENANT_ID,
    FEDERATION_AUDIENCE,
    KEY_PERMISSIONS,
    SECRET_CLIENT_ID,
    SECRET_PERMISSIONS,
    WORKLOAD_CLIENT_ID,
    WORKLOAD_SUBJECT,
    AdminInputError,
    AssertionRejected,
    CertificateVersion,
    Counters,
    Faults,
    FederatedCredential,
    FederationIssuer,
    Identity,
    KeyVersion,
    RotationPolicy,
    SecretVersion,
    TokenRecord,
    WindowLimiter,
    iso_duration_seconds,
    load_public_key,
    new_secret,
    new_version,
    now,
    parse_faults,
    parse_rotation_policy,
    verify_jwt,
)
from .tls import ensure_tls

log = logging.getLogger("akv_emulator")

# The subscription in the resource IDs of 403 answers (the emulator belongs to none).
EMULATOR_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_API_VERSION = "2025-07-01"
_ERROR_CODES = {
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

Handler = Callable[[], Awaitable[web.StreamResponse]]
_Item = TypeVar("_Item", KeyVersion, SecretVersion, CertificateVersion)
PEM_CONTENT_TYPE = "application/x-pem-file"
PKCS12_CONTENT_TYPE = "application/x-pkcs12"


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path = field(default_factory=lambda: Path(".akv-emulator"))
    tenant_id: str = DEFAULT_TENANT_ID
    token_lifetime: int = 3600
    challenge_resource: str | None = None
    env_auth: str = "workload"
    tls_names: list[str] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    # Every host is a Managed HSM: keys only (hosts with ".managedhsm." are one anyway).
    managed_hsm: bool = False
    # Serve a CONNECT proxy that tunnels the DNS names of tls_names to this emulator.
    proxy: bool = False
    # Permission model, firewall and api-versions served at start-up (and after reset).
    vault: rules.VaultSettings = field(default_factory=rules.VaultSettings)


def kv_error(
    status: int,
    code: str,
    message: str,
    inner: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return web.json_response({"error": error}, status=status, headers=headers)


def _attributes(item: KeyVersion | SecretVersion | CertificateVersion) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "enabled": item.enabled,
        "created": item.created,
        "updated": item.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    }
    if item.not_before is not None:
        attrs["nbf"] = item.not_before
    if item.expires is not None:
        attrs["exp"] = item.expires
    if isinstance(item, KeyVersion):
        attrs["exportable"] = item.exportable
    return attrs


def _release_policy(data: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """A key's release policy from a create or update body (``release_policy``:
    ``contentType``, ``data`` base64url, ``immutable``); ``previous`` when the body
    has none. An immutable policy cannot be changed."""
    raw = data.get("release_policy")
    if raw is None:
        return previous
    if previous is not None and previous.get("immutable"):
        raise ValueError("The key's release policy is immutable and cannot be changed.")
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), str) or not raw["data"]:
        raise ValueError("The release_policy needs 'data': the policy, base64url encoded.")
    try:
        crypto.b64url_decode(raw["data"])
    except (binascii.Error, ValueError):
        raise ValueError("The release_policy's 'data' is not base64url.") from None
    return {
        "contentType": str(raw.get("contentType") or "application/json; charset=utf-8"),
        "data": raw["data"],
        "immutable": bool(raw.get("immutable", False)),
    }


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"The attribute '{name}' must be a Unix timestamp.")
    return int(value)


def _tags(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def _new_item_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields a new key or secret version takes from its request's attributes and tags."""
    attrs = data.get("attributes") or {}
    return {
        "enabled": bool(attrs.get("enabled", True)),
        "not_before": _int_or_none(attrs.get("nbf"), "nbf"),
        "expires": _int_or_none(attrs.get("exp"), "exp"),
        "tags": _tags(data.get("tags") or {}),
    }


def _object_path(request: web.Request) -> list[str]:
    """The path below /keys or /secrets, split at "/" (one trailing slash ignored)."""
    parts = request.match_info["tail"].split("/")[1:] if request.match_info["tail"] else []
    if len(parts) > 2 and parts[-1] == "":
        parts = parts[:-1]
    return parts


def _valid_name(name: str) -> bool:
    return rules.valid_name(name)


def _find(
    store: NameDict[dict[str, _Item]], kind: str, name: str, version: str
) -> _Item | web.Response:
    """The given version of a key or secret (kind), the latest when version is empty, or a 404."""
    versions = store.get(name)
    item = None
    if versions:
        item = versions.get(version.lower()) if version else next(reversed(versions.values()))
    if item is None:
        ident = f"{name}/{version}" if version else name
        return kv_error(
            404,
            f"{kind.capitalize()}NotFound",
            f"A {kind} with (name/id) {ident} was not found in this key vault. If you "
            f"recently deleted this {kind} you may be able to recover it using the correct "
            f"recovery command.",
        )
    return item


_PEM_KEY = re.compile(
    rb"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", re.S
)


def _load_certificate_and_key(
    raw: bytes, content_type: str, password: Any
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """The private key and certificates of an import's value (PEM text or PKCS#12)."""
    if content_type == PEM_CONTENT_TYPE:
        match = _PEM_KEY.search(raw)
        if match is None:
            raise ValueError("The PEM holds no private key; Key Vault needs it to import.")
        key: object = serialization.load_pem_private_key(match.group(0), None)
        certs = x509.load_pem_x509_certificates(raw)
    else:
        pwd = password.encode() if isinstance(password, str) and password else None
        key, cert, extra = pkcs12.load_key_and_certificates(raw, pwd)
        certs = [c for c in [cert, *extra] if c is not None]
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("Only RSA and EC keys can be imported.")
    return key, certs


def _same_public_key(a: Any, b: Any) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(a.public_bytes(der, spki) == b.public_bytes(der, spki))


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # Names compare case-insensitively (softdelete.NameDict); items keep the stored case.
        self.keys: NameDict[dict[str, KeyVersion]] = NameDict()
        self.secrets: NameDict[dict[str, SecretVersion]] = NameDict()
        self.certificates: NameDict[dict[str, CertificateVersion]] = NameDict()
        self.rotation_policies: NameDict[RotationPolicy] = NameDict()
        self.deleted_keys: NameDict[Deleted[KeyVersion]] = NameDict()
        self.deleted_secrets: NameDict[Deleted[SecretVersion]] = NameDict()
        self.tokens: dict[str, TokenRecord] = {}
        self.faults = config.faults
        self.connection_faults = ConnectionFaults()
        self._initial_faults = json.loads(json.dumps(config.faults.describe()))
        self.counters = Counters()
        self.limiter = WindowLimiter()
        self.rng = secrets.SystemRandom()
        self.shutdown = asyncio.Event()
        self.base_url = ""  # set once the socket is bound
        self.issuer: FederationIssuer | None = None
        self.trusted_issuers: dict[str, list[Any]] = {}
        self.discovered = DiscoveryTrust()
        self.sp_secret = new_secret()
        self.identities: dict[str, Identity] = {}
        self.signing_keys = entra.SigningKeys()
        self.vault_settings = config.vault
        # Signs the key attestations of the Managed HSM mode; throwaway, per process.
        self.attestation_authority = attestation.AttestationAuthority.create()

    # ---- identities --------------------------------------------------------------------

    def default_identities(self) -> dict[str, Identity]:
        assert self.issuer is not None
        return {
            WORKLOAD_CLIENT_ID: Identity(
                WORKLOAD_CLIENT_ID,
                federated=[FederatedCredential(self.issuer.issuer, WORKLOAD_SUBJECT)],
            ),
            SECRET_CLIENT_ID: Identity(SECRET_CLIENT_ID, secret=self.sp_secret),
        }

    def bind(self, base_url: str) -> None:
        self.base_url = base_url
        self.issuer = FederationIssuer(f"{base_url}/_emulator/oidc")
        self.trusted_issuers = {self.issuer.issuer: [self.issuer.public_key]}
        self.discovered.clear()
        self.identities = self.default_identities()

    # ---- application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._count_responses, self._vault_rules], client_max_size=4 * 1024**2
        )
        app.on_response_prepare.append(self._vault_headers)
        admin = [
            ("GET", "/_emulator/health", self.admin_health),
            ("GET", "/_emulator/counters", self.admin_counters),
            ("DELETE", "/_emulator/counters", self.admin_reset_counters),
            ("GET", "/_emulator/faults", self.admin_get_faults),
            ("PUT", "/_emulator/faults", self.admin_put_faults),
            ("PATCH", "/_emulator/faults", self.admin_patch_faults),
            ("DELETE", "/_emulator/faults", self.admin_clear_faults),
            ("GET", "/_emulator/identities", self.admin_identities),
            ("PUT", "/_emulator/identities/{client_id}", self.admin_put_identity),
            ("DELETE", "/_emulator/identities/{client_id}", self.admin_delete_identity),
            ("POST", "/_emulator/identities/{client_id}/assertion", self.admin_assertion),
            ("GET", "/_emulator/trusted-issuers", self.admin_trusted_issuers),
            ("PUT", "/_emulator/trusted-issuers", self.admin_put_trusted_issuer),
            ("POST", "/_emulator/tokens/revoke", self.admin_revoke_tokens),
            ("POST", "/_emulator/reset", self.admin_reset),
            ("DELETE", "/_emulator/data", self.admin_clear_data),
            ("POST", "/_emulator/keys/{name}/rotate", self.admin_rotate_key),
            ("GET", "/_emulator/vault", self.admin_get_vault),
            ("PUT", "/_emulator/vault", self.admin_put_vault),
            ("GET", "/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            ("GET", "/{tenant}/.well-known/openid-configuration", self.openid_configuration),
            ("POST", "/{tenant}/oauth2/v2.0/token", self.token),
            ("GET", "/{tenant}/discovery/v2.0/keys", self.jwks),
            ("GET", "/{tenant}/discovery/keys", self.jwks),
        ]
        for method, path, handler in [*admin, *self.connection_faults.routes()]:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", "/keys{tail:.*}", self.keys_entry)
        app.router.add_route("*", "/secrets{tail:.*}", self.secrets_entry)
        app.router.add_route("*", "/certificates{tail:.*}", self.certificates_entry)
        app.router.add_route("*", "/deletedkeys{tail:.*}", self.deleted_keys_entry)
        app.router.add_route("*", "/deletedsecrets{tail:.*}", self.deleted_secrets_entry)
        return app

    @web.middleware
    async def _count_responses(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._record(request, exc.status)
            raise
        self._record(request, response.status)
        return response

    @staticmethod
    def is_data_plane(request: web.Request) -> bool:
        first = request.path.split("/", 2)[1].lower() if request.path.count("/") else ""
        return first in ("keys", "secrets", "certificates", "deletedkeys", "deletedsecrets")

    @web.middleware
    async def _vault_rules(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every data-plane request names an api-version the vault serves (keys.json,
        secrets.json: a required query parameter), checked before authentication
        (assumption: the vault parses the request before it challenges it)."""
        if self.is_data_plane(request):
            refused = rules.api_version_refusal(request, self.vault_settings.api_versions)
            if refused is not None:
                return refused
        return await handler(request)

    async def _vault_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.is_data_plane(request):
            rules.add_vault_headers(request, response)

    def _record(self, request: web.Request, status: int) -> None:
        op = request.get("op")
        if op:
            self.counters.responses[op][str(status)] += 1

    # ---- helpers -----------------------------------------------------------------------

    def vault_base(self, request: web.Request) -> str:
        return f"https://{request.host}"

    def is_managed_hsm(self, request: web.Request) -> bool:
        """Whether this request reaches a Managed HSM: keys only, no secrets or certificates."""
        return self.config.managed_hsm or ".managedhsm." in request.host.lower()

    async def managed_hsm_refuses(self, request: web.Request, op: str) -> web.StreamResponse:
        """A Managed HSM's answer to the secrets or certificates API: it has neither.

        After authentication, as for any data-plane path, then 404 in Key Vault's error
        envelope. (Microsoft documents no error for these paths; 404 NotFound is what a
        route the service does not serve answers, and what clients must expect.)
        """

        async def refuse(who: Identity) -> web.StreamResponse:
            return kv_error(
                404,
                "NotFound",
                f"The operation {request.method} {request.path} is not supported by "
                f"Managed HSM: a Managed HSM holds keys only (no secrets or certificates).",
            )

        return await self.vault_call(request, op, None, refuse)

    def resource_for(self, request: web.Request) -> str:
        """The challenge resource: the vault host's parent domain, as Key Vault does.

        A real vault at myvault.vault.azure.net names resource https://vault.azure.net, and the
        SDK accepts a resource only if the vault host ends with ".<resource host>". Dropping the
        first label of our own host (127.0.0.1 -> 0.0.1) keeps that check satisfied and on.
        """
        if self.config.challenge_resource:
            return self.config.challenge_resource
        parts = urlsplit(f"https://{request.host}")
        hostname = parts.hostname or "localhost"
        parent = hostname.split(".", 1)[1] if "." in hostname and ":" not in hostname else hostname
        if ":" in parent:
            parent = f"[{parent}]"
        port = parts.port
        return f"https://{parent}" + (f":{port}" if port and port != 443 else "")

    def challenge(self, request: web.Request, message: str) -> web.Response:
        header = (
            f'Bearer authorization="{self.vault_base(request)}/{self.config.tenant_id}", '
            f'resource="{self.resource_for(request)}"'
        )
        return kv_error(401, "Unauthorized", message, headers={"WWW-Authenticate": header})

    def authenticate(self, request: web.Request) -> Identity | web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth:
            request["op"] = "challenge"
            self.counters.requests["challenge"] += 1
            return self.challenge(request, "AKV10000: Request is missing a Bearer or PoP token.")
        rejected = self._check_token(request, auth)
        if isinstance(rejected, web.Response):
            request["op"] = "unauthorized"
            self.counters.requests["unauthorized"] += 1
        return rejected

    def _check_token(self, request: web.Request, auth: str) -> Identity | web.Response:
        scheme, _, token = auth.partition(" ")
        record = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if record is None:
            return self.challenge(request, "AKV10032: Invalid issuer or token.")
        if record.revoked_at is not None:
            return kv_error(
                401,
                "Unauthorized",
                "Continuous access evaluation resulted in challenge with result: "
                "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
                headers={
                    "WWW-Authenticate": entra.cae_challenge(
                        self.vault_base(request), record.revoked_at
                    )
                },
            )
        if record.expires_at <= time.time():
            self.tokens.pop(token.strip(), None)
            return self.challenge(request, "AKV10022: Invalid audience or expired token.")
        if record.audience.rstrip("/") != self.resource_for(request).rstrip("/"):
            return self.challenge(
                request,
                f"AKV10022: Invalid audience. Expected {self.resource_for(request)}, "
                f"found: {record.audience}.",
            )
        if record.tenant_id != self.config.tenant_id:
            return self.challenge(request, "AKV10032: Invalid issuer.")
        identity = self.identities.get(record.client_id)
        if identity is None:
            return self.challenge(request, "AKV10032: The caller's identity no longer exists.")
        return identity

    async def apply_faults(self, request: web.Request, op: str) -> web.StreamResponse | None:
        faults = self.faults
        if faults.latency_applies(op):
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.stall.fire(op, self.rng):
            # A stalled call is never answered: it stops counting as in flight
            # now, or it would inflate every later peak_in_flight.
            request["stalled"] = True
            self.counters.leave(op)
            await self.shutdown.wait()
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        throttle = faults.throttle
        if throttle.fire(op, self.rng):
            if op == "token":
                return entra.entra_response(request, entra.busy(429, throttle.retry_after))
            return self.throttled(throttle.retry_after, "the emulator was told to throttle")
        if faults.errors.fire(op, self.rng):
            status = faults.errors.status
            if op == "token":
                return entra.entra_response(request, entra.busy(status))
            if status == 409:
                # Key Vault's common error codes: ConflictError, "multiple operations on
                # the same item ... sequence operations or implement retry logic".
                return kv_error(
                    409,
                    "Conflict",
                    "There was a conflict with another operation on the same item; retry it.",
                )
            return kv_error(
                status,
                _ERROR_CODES.get(status, "InternalServerError"),
                "The emulator was told to fail this request.",
            )
        return None

    def throttled(self, retry_after: float | None, reason: str) -> web.Response:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return kv_error(
            429,
            "Throttled",
            f"Request was not processed because too many requests were received. Reason: {reason}",
            headers=headers,
        )

    def rate_limit(self, request: web.Request, limit_class: str) -> web.Response | None:
        """429 when this request would exceed the vault's weighted window (state.WindowLimiter):
        the body Key Vault sends (code ``Throttled``, reason ``VaultRequestTypeLimitReached``);
        Retry-After only when ``throttle.retry_after`` is set (0: the seconds until the window
        has room, rounded up), as Key Vault does not always send it."""
        throttle = self.faults.throttle
        limit = throttle.effective_limits().get(limit_class)
        if limit is None:
            return None
        pool = "other" if limit_class == "other" else "keys"
        wait = self.limiter.admit(request.host, pool, limit, throttle.window_seconds)
        if wait is None:
            return None
        retry_after = throttle.retry_after
        if retry_after is not None and retry_after == 0:
            retry_after = float(math.ceil(wait))
        return self.throttled(retry_after, "VaultRequestTypeLimitReached")

    async def vault_call(
        self,
        request: web.Request,
        op: str,
        permission: tuple[str, str] | None,
        handler: Callable[[Identity], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        # A vault taken down (faults.ConnectionFaults.down): not even the challenge answers.
        down = self.connection_faults.outage(request)
        if down is not None:
            return down
        who = self.authenticate(request)
        if isinstance(who, web.Response):
            return who
        request["op"] = op
        self.counters.requests[op] += 1
        self.counters.enter(op)
        try:
            self.connection_faults.before(request, op)
            response = await self._authorized_call(request, op, who, permission, handler)
            return await self.connection_faults.deliver(request, op, response)
        finally:
            if not request.get("stalled"):
                self.counters.leave(op)

    async def _authorized_call(
        self,
        request: web.Request,
        op: str,
        who: Identity,
        permission: tuple[str, str] | None,
        handler: Callable[[Identity], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        faulted = await self.apply_faults(request, op)
        if faulted is not None:
            return faulted
        if self.vault_settings.firewall:
            return rules.firewall_refusal(request, who.client_id)
        if permission is None:
            return await handler(who)
        area, action = permission
        kind, name = self.object_of(request, op)
        hsm = self.is_managed_hsm(request)
        needed = rbac.data_action(op, managed_hsm=hsm)
        refused = action not in who.permissions(area)
        if (
            not refused
            and who.role_assignments is not None
            and self.vault_settings.permission_model == "rbac"
        ):
            # Azure RBAC: one of the identity's assignments must grant the data action
            # on this object (or on the whole vault). A vault on access policies
            # ignores role assignments for data actions, as Key Vault does.
            refused = not rbac.allows(who.role_assignments, needed, kind, name)
        if refused:
            return rules.permission_refusal(
                self.vault_settings,
                request,
                who.client_id,
                area,
                action,
                data_action=needed,
                resource=self.resource_id(request, kind, name, hsm),
                tenant_id=self.config.tenant_id,
            )
        return await handler(who)

    @staticmethod
    def object_of(request: web.Request, op: str) -> tuple[str | None, str | None]:
        """The key, secret or certificate an operation acts on, as (kind, name), for the
        scope of a role assignment; (None, None) for one on the vault as a whole (a list
        of every key or secret). A deleted object keeps its kind and name."""
        if op in rbac.VAULT_WIDE:
            return None, None
        parts = request.path.strip("/").split("/")
        kind = {"deletedkeys": "keys", "deletedsecrets": "secrets"}.get(
            parts[0].lower(), parts[0].lower()
        )
        return kind, parts[1] if len(parts) > 1 and parts[1] else None

    @staticmethod
    def resource_id(request: web.Request, kind: str | None, name: str | None, hsm: bool) -> str:
        """The Azure resource ID a refusal names (the emulator has no subscription or
        resource group: fixed placeholders)."""
        vault = request.host.split(":")[0].split(".")[0]
        base = (
            f"/subscriptions/{EMULATOR_SUBSCRIPTION}/resourcegroups/akv-emulator/providers/"
            f"microsoft.keyvault/{'managedhsms' if hsm else 'vaults'}/{vault}"
        )
        return f"{base}/{kind}/{name}" if kind and name else base

    @staticmethod
    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError("The request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise ValueError("The request body must be a JSON object.")
        return data

    @staticmethod
    def bad(message: str) -> web.Response:
        return kv_error(400, "BadParameter", message)

    # ---- keys --------------------------------------------------------------------------

    async def keys_entry(self, request: web.Request) -> web.StreamResponse:
        parts = _object_path(request)
        method = request.method
        if parts in ([], [""]) and method == "GET":
            return await self.vault_call(
                request, "list_keys", ("keys", "list"), lambda who: self._list_keys(request)
            )
        if not parts or not _valid_name(parts[0]):
            return self.bad("The key name is invalid: use 1-127 letters, digits and dashes.")
        name = parts[0]
        rest = parts[1:]
        if rest == ["create"] and method == "POST":
            return await self.vault_call(
                request,
                "create_key",
                ("keys", "create"),
                lambda who: self._create_key(request, name),
            )
        if rest == ["versions"] and method == "GET":
            return await self.vault_call(
                request,
                "list_key_versions",
                ("keys", "list"),
                lambda who: self._list_key_versions(request, name),
            )
        if rest == ["rotate"] and method == "POST":
            return await self.vault_call(
                request,
                "rotate_key",
                ("keys", "rotate"),
                lambda who: self._rotate_key(request, name),
            )
        if rest == ["rotationpolicy"] and method == "GET":
            return await self.vault_call(
                request,
                "get_key_rotation_policy",
                ("keys", "getrotationpolicy"),
                lambda who: self._get_rotation_policy(request, name),
            )
        if rest == ["rotationpolicy"] and method == "PUT":
            return await self.vault_call(
                request,
                "update_key_rotation_policy",
                ("keys", "setrotationpolicy"),
                lambda who: self._put_rotation_policy(request, name),
            )
        if len(rest) <= 1 and method == "GET":
            version = rest[0] if rest else ""
            return await self.vault_call(
                request,
                "get_key",
                ("keys", "get"),
                lambda who: self._get_key(request, name, version),
            )
        if len(rest) <= 1 and method == "PATCH":
            version = rest[0] if rest else ""
            return await self.vault_call(
                request,
                "update_key",
                ("keys", "update"),
                lambda who: self._update_key(request, name, version),
            )
        if not rest and method == "DELETE":
            return await self.vault_call(
                request,
                "delete_key",
                ("keys", "delete"),
                lambda who: self._delete_key(request, name),
            )
        if len(rest) == 2 and rest[1] == "attestation" and method == "GET":
            return await self.vault_call(
                request,
                "get_key_attestation",
                ("keys", "get"),
                lambda who: self._key_attestation(request, name, rest[0]),
            )
        if len(rest) == 2 and rest[1] in ("sign", "verify") and method == "POST":
            op = rest[1]
            return await self.vault_call(
                request, op, ("keys", op), lambda who: self._key_crypto(request, name, rest[0], op)
            )
        return kv_error(404, "NotFound", f"The operation {method} {request.path} is not supported.")

    def find_key(self, name: str, version: str) -> KeyVersion | web.Response:
        return _find(self.keys, "key", name, version)

    def key_bundle(self, request: web.Request, item: KeyVersion) -> dict[str, Any]:
        jwk: dict[str, Any] = {
            "kid": f"{self.vault_base(request)}/keys/{item.name}/{item.version}",
            "kty": item.material.kty,
            "key_ops": list(item.key_ops),
            **item.material.public_jwk(),
        }
        bundle: dict[str, Any] = {"key": jwk, "attributes": _attributes(item)}
        if self.is_managed_hsm(request):
            bundle["attributes"]["hsmPlatform"] = "2"
        if item.release_policy is not None:
            bundle["release_policy"] = dict(item.release_policy)
        if item.tags:
            bundle["tags"] = dict(item.tags)
        return bundle

    async def _create_key(self, request: web.Request, name: str) -> web.StreamResponse:
        if name in self.deleted_keys:
            return name_conflict("key", name)
        name = stored_name(self.keys, name)
        try:
            data = await self.body(request)
            kty = data.get("kty")
            if not isinstance(kty, str):
                return self.bad("The parameter 'kty' is required.")
            problem = rules.tags_problem(data.get("tags"))
            if problem is not None:
                return self.bad(problem)
            material = crypto.generate(
                kty,
                key_size=data.get("key_size"),
                crv=data.get("crv"),
                public_exponent=data.get("public_exponent"),
            )
            default_ops = (
                ["sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey"]
                if material.is_rsa
                else ["sign", "verify"]
            )
            key_ops = data.get("key_ops") or default_ops
            exportable = (data.get("attributes") or {}).get("exportable", False)
            if not isinstance(exportable, bool):
                return self.bad("The attribute 'exportable' must be true or false.")
            release_policy = _release_policy(data, None)
            if exportable and release_policy is None:
                # KeyAttributes.exportable: "Release policy must be provided when
                # creating the first version of an exportable key."
                return self.bad("An exportable key needs a release policy (release_policy).")
            item = KeyVersion(
                name=name,
                version=new_version(),
                material=material,
                key_ops=[str(op) for op in key_ops],
                exportable=exportable,
                release_policy=release_policy,
                **_new_item_fields(data),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return self.bad(str(exc) or "Invalid key parameters.")
        self.keys.setdefault(name, {})[item.version] = item
        return web.json_response(self.key_bundle(request, item))

    def rotate(self, name: str) -> KeyVersion | web.Response:
        """What Key Vault's rotate does: a new version of the same type, size or curve (and
        public exponent), key_ops and tags, expiring after the policy's expiryTime if set."""
        latest = self.find_key(name, "")
        if isinstance(latest, web.Response):
            return latest
        fresh = latest.material.same_shape()
        policy = self.rotation_policies.get(name)
        expires = None
        if policy is not None and policy.expiry_time is not None:
            expires = now() + iso_duration_seconds(policy.expiry_time)
        item = KeyVersion(
            name=latest.name,
            version=new_version(),
            material=fresh,
            key_ops=list(latest.key_ops),
            expires=expires,
            tags=dict(latest.tags),
            exportable=latest.exportable,
            release_policy=latest.release_policy,
        )
        self.keys[name][item.version] = item
        return item

    async def _rotate_key(self, request: web.Request, name: str) -> web.StreamResponse:
        item = self.rotate(name)
        if isinstance(item, web.Response):
            return item
        return web.json_response(self.key_bundle(request, item))

    def policy_body(self, request: web.Request, name: str) -> dict[str, Any]:
        policy = self.rotation_policies.get(name)
        body: dict[str, Any] = {"id": f"{self.vault_base(request)}/keys/{name}/rotationpolicy"}
        if policy is None:
            body["lifetimeActions"] = [a.describe() for a in DEFAULT_LIFETIME_ACTIONS]
            body["attributes"] = {}
            return body
        attributes: dict[str, Any] = {"created": policy.created, "updated": policy.updated}
        if policy.expiry_time is not None:
            attributes["expiryTime"] = policy.expiry_time
        body["lifetimeActions"] = [a.describe() for a in policy.lifetime_actions]
        body["attributes"] = attributes
        return body

    async def _get_rotation_policy(self, request: web.Request, name: str) -> web.StreamResponse:
        found = self.find_key(name, "")
        if isinstance(found, web.Response):
            return found
        return web.json_response(self.policy_body(request, name))

    async def _put_rotation_policy(self, request: web.Request, name: str) -> web.StreamResponse:
        found = self.find_key(name, "")
        if isinstance(found, web.Response):
            return found
        try:
            data = await self.body(request)
            policy = parse_rotation_policy(data, self.rotation_policies.get(name))
        except (ValueError, TypeError, AttributeError) as exc:
            return self.bad(str(exc) or "Invalid rotation policy.")
        self.rotation_policies[name] = policy
        return web.json_response(self.policy_body(request, name))

    async def _get_key(self, request: web.Request, name: str, version: str) -> web.StreamResponse:
        item = self.find_key(name, version)
        if isinstance(item, web.Response):
            return item
        # "Key GETs share the budget" of the key's class (the service-limits page).
        throttled = self.rate_limit(request, item.material.limit_class)
        if throttled is not None:
            return throttled
        return web.json_response(self.key_bundle(request, item))

    async def _key_attestation(
        self, request: web.Request, name: str, version: str
    ) -> web.StreamResponse:
        """The key bundle with ``attributes.attestation`` (attestation.py): on a Managed
        HSM only. A vault answers 400 (assumption: Key Vault documents attestation
        for Managed HSM keys only and no error for vaults)."""
        if not self.is_managed_hsm(request):
            return self.bad("Key attestation is available for Managed HSM keys only.")
        if not self.vault_settings.key_attestation:
            return self.bad("Key attestation is not available for this key.")
        item = self.find_key(name, version)
        if isinstance(item, web.Response):
            return item
        bundle = self.key_bundle(request, item)
        kid = bundle["key"]["kid"]
        public_key = item.material.private_key.public_key()
        authority = self.attestation_authority
        statements = {
            part: authority.statement(
                kid,
                public_key,
                private=part == "private",
                exportable=item.exportable,
                local=item.local,
            )
            for part in ("private", "public")
        }
        bundle["attributes"]["attestation"] = {
            "certificatePemFile": crypto.b64url_encode(authority.certificate_pem_file()),
            "privateKeyAttestation": crypto.b64url_encode(statements["private"]),
            "publicKeyAttestation": crypto.b64url_encode(statements["public"]),
            "version": attestation.FORMAT_VERSION,
        }
        return web.json_response(bundle)

    async def _update_key(
        self, request: web.Request, name: str, version: str
    ) -> web.StreamResponse:
        item = self.find_key(name, version)
        if isinstance(item, web.Response):
            return item
        try:
            data = await self.body(request)
            attrs = data.get("attributes") or {}
            if "enabled" in attrs and attrs["enabled"] is not None:
                item.enabled = bool(attrs["enabled"])
            if "nbf" in attrs:
                item.not_before = _int_or_none(attrs["nbf"], "nbf")
            if "exp" in attrs:
                item.expires = _int_or_none(attrs["exp"], "exp")
            problem = rules.tags_problem(data.get("tags"))
            if problem is not None:
                return self.bad(problem)
            if data.get("key_ops") is not None:
                item.key_ops = [str(op) for op in data["key_ops"]]
            item.release_policy = _release_policy(data, item.release_policy)
            if data.get("tags") is not None:
                item.tags = _tags(data["tags"])
        except (ValueError, TypeError, AttributeError) as exc:
            return self.bad(str(exc) or "Invalid key attributes.")
        item.updated = now()
        return web.json_response(self.key_bundle(request, item))

    def _page(
        self, request: web.Request, items: list[dict[str, Any]], path: str
    ) -> web.StreamResponse:
        try:
            size = int(request.query.get("maxresults", "25"))
            start = int(request.query.get("$skiptoken", "0"))
        except ValueError:
            return self.bad("maxresults and $skiptoken must be integers.")
        size = max(1, min(size, 25))
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            api = request.query.get("api-version", DEFAULT_API_VERSION)
            next_link = (
                f"{self.vault_base(request)}{path}?api-version={api}"
                f"&$skiptoken={start + size}&maxresults={size}"
            )
        return web.json_response({"value": page, "nextLink": next_link})

    def _key_item(
        self, request: web.Request, item: KeyVersion, with_version: bool
    ) -> dict[str, Any]:
        kid = f"{self.vault_base(request)}/keys/{item.name}"
        entry: dict[str, Any] = {
            "kid": f"{kid}/{item.version}" if with_version else kid,
            "attributes": _attributes(item),
        }
        if item.tags:
            entry["tags"] = dict(item.tags)
        return entry

    async def _list_keys(self, request: web.Request) -> web.StreamResponse:
        items = [
            self._key_item(request, next(reversed(versions.values())), False)
            for versions in self.keys.values()
        ]
        return self._page(request, items, "/keys")

    async def _list_key_versions(self, request: web.Request, name: str) -> web.StreamResponse:
        items = [self._key_item(request, v, True) for v in self.keys.get(name, {}).values()]
        return self._page(request, items, f"/keys/{name}/versions")

    async def _key_crypto(
        self, request: web.Request, name: str, version: str, op: str
    ) -> web.StreamResponse:
        item = self.find_key(name, version)
        if isinstance(item, web.Response):
            return item
        throttled = self.rate_limit(request, item.material.limit_class)
        if throttled is not None:
            return throttled
        if not item.enabled and op == "sign":
            return kv_error(
                403, "Forbidden", "Operation sign is not allowed on a disabled key.", "KeyDisabled"
            )
        stamp = now()
        leeway = rules.KEY_VALIDITY_LEEWAY
        if op == "sign" and item.not_before is not None and stamp + leeway < item.not_before:
            return kv_error(
                403,
                "Forbidden",
                "Operation sign is not allowed before the key's nbf.",
                "KeyNotYetValid",
            )
        if op == "sign" and item.expires is not None and stamp - leeway >= item.expires:
            return kv_error(
                403, "Forbidden", "Operation sign is not allowed on an expired key.", "KeyExpired"
            )
        if op not in item.key_ops:
            return kv_error(
                403,
                "Forbidden",
                f"Operation {op} is not permitted on this key.",
                "KeyOperationForbidden",
            )
        try:
            data = await self.body(request)
            alg = data.get("alg")
            if not isinstance(alg, str) or not alg:
                return self.bad("The parameter 'alg' is required.")
            if op == "sign":
                value = data.get("value")
                if not isinstance(value, str):
                    return self.bad("The parameter 'value' is required.")
                signature = item.material.sign(alg, crypto.b64url_decode(value))
                self.connection_faults.signed(request, value, f"{item.name}/{item.version}")
                return web.json_response(
                    {
                        "kid": f"{self.vault_base(request)}/keys/{item.name}/{item.version}",
                        "value": crypto.b64url_encode(signature),
                    }
                )
            digest, value = data.get("digest"), data.get("value")
            if not isinstance(digest, str) or not isinstance(value, str):
                return self.bad("The parameters 'digest' and 'value' are required.")
            ok = item.material.verify(
                alg, crypto.b64url_decode(digest), crypto.b64url_decode(value)
            )
            return web.json_response({"value": ok})
        except crypto.CryptoParameterError as exc:
            return self.bad(str(exc))
        except (ValueError, TypeError) as exc:
            return self.bad(f"Invalid request: {exc}")

    # ---- secrets -----------------------------------------------------------------------

    async def secrets_entry(self, request: web.Request) -> web.StreamResponse:
        parts = _object_path(request)
        method = request.method
        if self.is_managed_hsm(request):
            op = "get_secret" if method == "GET" and len(parts) in (1, 2) else "secrets_api"
            return await self.managed_hsm_refuses(request, op)
        if parts in ([], [""]) and method == "GET":
            return await self.vault_call(
                request,
                "list_secrets",
                ("secrets", "list"),
                lambda who: self._list_secrets(request),
            )
        if not parts or not _valid_name(parts[0]):
            return self.bad("The secret name is invalid: use 1-127 letters, digits and dashes.")
        name, rest = parts[0], parts[1:]
        if rest == ["versions"] and method == "GET":
            return await self.vault_call(
                request,
                "list_secret_versions",
                ("secrets", "list"),
                lambda who: self._list_secret_versions(request, name),
            )
        if len(rest) <= 1 and method == "GET":
            version = rest[0] if rest else ""
            return await self.vault_call(
                request,
                "get_secret",
                ("secrets", "get"),
                lambda who: self._get_secret(request, name, version),
            )
        if rest in ([], [""]) and method == "PUT":
            return await self.vault_call(
                request,
                "set_secret",
                ("secrets", "set"),
                lambda who: self._set_secret(request, name),
            )
        if not rest and method == "DELETE":
            return await self.vault_call(
                request,
                "delete_secret",
                ("secrets", "delete"),
                lambda who: self._delete_secret(request, name),
            )
        if len(rest) <= 1 and method == "PATCH":
            version = rest[0] if rest else ""
            return await self.vault_call(
                request,
                "update_secret",
                ("secrets", "update"),
                lambda who: self._update_secret(request, name, version),
            )
        return kv_error(404, "NotFound", f"The operation {method} {request.path} is not supported.")

    def secret_bundle(
        self, request: web.Request, item: SecretVersion, *, with_value: bool = True
    ) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "id": f"{self.vault_base(request)}/secrets/{item.name}/{item.version}",
            "attributes": _attributes(item),
        }
        if with_value:
            bundle["value"] = item.value
        if item.content_type is not None:
            bundle["contentType"] = item.content_type
        if item.tags:
            bundle["tags"] = dict(item.tags)
        return bundle

    def find_secret(self, name: str, version: str) -> SecretVersion | web.Response:
        return _find(self.secrets, "secret", name, version)

    async def _get_secret(
        self, request: web.Request, name: str, version: str
    ) -> web.StreamResponse:
        item = self.find_secret(name, version)
        if isinstance(item, web.Response):
            return item
        throttled = self.rate_limit(request, "other")
        if throttled is not None:
            return throttled
        if not item.enabled:
            return kv_error(
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            )
        return web.json_response(self.secret_bundle(request, item))

    async def _set_secret(self, request: web.Request, name: str) -> web.StreamResponse:
        if name in self.deleted_secrets:
            return name_conflict("secret", name)
        name = stored_name(self.secrets, name)
        try:
            data = await self.body(request)
            value = data.get("value")
            if not isinstance(value, str):
                return self.bad("The parameter 'value' is required and must be a string.")
            content_type = data.get("contentType")
            if content_type is not None and not isinstance(content_type, str):
                return self.bad("The parameter 'contentType' must be a string.")
            problem = rules.secret_problem(value, content_type) or rules.tags_problem(
                data.get("tags")
            )
            if problem is not None:
                return self.bad(problem)
            item = SecretVersion(
                name=name,
                version=new_version(),
                value=value,
                content_type=content_type,
                **_new_item_fields(data),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return self.bad(str(exc) or "Invalid secret parameters.")
        self.secrets.setdefault(name, {})[item.version] = item
        return web.json_response(self.secret_bundle(request, item))

    async def _update_secret(
        self, request: web.Request, name: str, version: str
    ) -> web.StreamResponse:
        item = self.find_secret(name, version)
        if isinstance(item, web.Response):
            return item
        try:
            data = await self.body(request)
            attrs = data.get("attributes") or {}
            if attrs.get("enabled") is not None:
                item.enabled = bool(attrs["enabled"])
            problem = rules.tags_problem(data.get("tags"))
            if problem is None and isinstance(data.get("contentType"), str):
                problem = rules.secret_problem("", data["contentType"])
            if problem is not None:
                return self.bad(problem)
            if "contentType" in data and data["contentType"] is not None:
                item.content_type = str(data["contentType"])
            if data.get("tags") is not None:
                item.tags = _tags(data["tags"])
        except (ValueError, TypeError, AttributeError) as exc:
            return self.bad(str(exc) or "Invalid secret attributes.")
        item.updated = now()
        return web.json_response(self.secret_bundle(request, item, with_value=False))

    async def _list_secrets(self, request: web.Request) -> web.StreamResponse:
        items = []
        for name, versions in self.secrets.items():
            latest = next(reversed(versions.values()))
            entry = self.secret_bundle(request, latest, with_value=False)
            entry["id"] = f"{self.vault_base(request)}/secrets/{name}"
            items.append(entry)
        return self._page(request, items, "/secrets")

    async def _list_secret_versions(self, request: web.Request, name: str) -> web.StreamResponse:
        items = [
            self.secret_bundle(request, v, with_value=False)
            for v in self.secrets.get(name, {}).values()
        ]
        return self._page(request, items, f"/secrets/{name}/versions")

    # ---- soft-delete (softdelete.py) ---------------------------------------------------

    def deleted_key_bundle(
        self, request: web.Request, entry: Deleted[KeyVersion]
    ) -> dict[str, Any]:
        latest = entry.latest()
        bundle = self.key_bundle(request, latest)
        bundle.update(entry.deletion_fields(self.vault_base(request), "deletedkeys", latest.name))
        return bundle

    def deleted_secret_bundle(
        self, request: web.Request, entry: Deleted[SecretVersion], *, with_value: bool = False
    ) -> dict[str, Any]:
        latest = entry.latest()
        bundle = self.secret_bundle(request, latest, with_value=with_value)
        bundle.update(
            entry.deletion_fields(self.vault_base(request), "deletedsecrets", latest.name)
        )
        return bundle

    async def _delete_key(self, request: web.Request, name: str) -> web.StreamResponse:
        found = self.find_key(name, "")
        if isinstance(found, web.Response):
            return found
        entry = Deleted(self.keys.pop(name))
        self.deleted_keys[name] = entry
        return web.json_response(self.deleted_key_bundle(request, entry))

    async def _delete_secret(self, request: web.Request, name: str) -> web.StreamResponse:
        found = self.find_secret(name, "")
        if isinstance(found, web.Response):
            return found
        entry = Deleted(self.secrets.pop(name))
        self.deleted_secrets[name] = entry
        return web.json_response(self.deleted_secret_bundle(request, entry))

    async def deleted_keys_entry(self, request: web.Request) -> web.StreamResponse:
        parts, method = deleted_path(request), request.method
        if not parts and method == "GET":
            return await self.vault_call(
                request,
                "list_deleted_keys",
                ("keys", "list"),
                lambda who: self._list_deleted_keys(request),
            )
        if not parts or not _valid_name(parts[0]):
            return self.bad("The key name is invalid: use 1-127 letters, digits and dashes.")
        name, rest = parts[0], parts[1:]
        if not rest and method in ("GET", "DELETE"):
            op, action = (
                ("get_deleted_key", "get") if method == "GET" else ("purge_deleted_key", "purge")
            )
            return await self.vault_call(
                request, op, ("keys", action), lambda who: self._deleted_key(request, name)
            )
        if rest == ["recover"] and method == "POST":
            return await self.vault_call(
                request,
                "recover_deleted_key",
                ("keys", "recover"),
                lambda who: self._deleted_key(request, name),
            )
        return kv_error(404, "NotFound", f"The operation {method} {request.path} is not supported.")

    async def _list_deleted_keys(self, request: web.Request) -> web.StreamResponse:
        base = self.vault_base(request)
        items = [
            {
                **self._key_item(request, e.latest(), False),
                **e.deletion_fields(base, "deletedkeys", e.latest().name),
            }
            for e in self.deleted_keys.values()
        ]
        return self._page(request, items, "/deletedkeys")

    async def _list_deleted_secrets(self, request: web.Request) -> web.StreamResponse:
        base = self.vault_base(request)
        items = [
            {
                **self.deleted_secret_bundle(request, e),
                "id": f"{base}/secrets/{e.latest().name}",
            }
            for e in self.deleted_secrets.values()
        ]
        return self._page(request, items, "/deletedsecrets")

    async def _deleted_key(self, request: web.Request, name: str) -> web.StreamResponse:
        entry = self.deleted_keys.get(name)
        if entry is None:
            return deleted_not_found("key", name)
        if request.method == "GET":
            return web.json_response(self.deleted_key_bundle(request, entry))
        del self.deleted_keys[name]
        if request.method == "DELETE":
            self.rotation_policies.pop(name, None)
            return web.Response(status=204)
        self.keys[name] = entry.versions
        return web.json_response(self.key_bundle(request, entry.latest()))

    async def deleted_secrets_entry(self, request: web.Request) -> web.StreamResponse:
        parts, method = deleted_path(request), request.method
        if self.is_managed_hsm(request):
            return await self.managed_hsm_refuses(request, "secrets_api")
        if not parts and method == "GET":
            return await self.vault_call(
                request,
                "list_deleted_secrets",
                ("secrets", "list"),
                lambda who: self._list_deleted_secrets(request),
            )
        if not parts or not _valid_name(parts[0]):
            return self.bad("The secret name is invalid: use 1-127 letters, digits and dashes.")
        name, rest = parts[0], parts[1:]
        if not rest and method in ("GET", "DELETE"):
            op, action = (
                ("get_deleted_secret", "get")
                if method == "GET"
                else ("purge_deleted_secret", "purge")
            )
            return await self.vault_call(
                request, op, ("secrets", action), lambda who: self._deleted_secret(request, name)
            )
        if rest == ["recover"] and method == "POST":
            return await self.vault_call(
                request,
                "recover_deleted_secret",
                ("secrets", "recover"),
                lambda who: self._deleted_secret(request, name),
            )
        return kv_error(404, "NotFound", f"The operation {method} {request.path} is not supported.")

    async def _deleted_secret(self, request: web.Request, name: str) -> web.StreamResponse:
        entry = self.deleted_secrets.get(name)
        if entry is None:
            return deleted_not_found("secret", name)
        if request.method == "GET":
            return web.json_response(self.deleted_secret_bundle(request, entry))
        del self.deleted_secrets[name]
        if request.method == "DELETE":
            return web.Response(status=204)
        self.secrets[name] = entry.versions
        return web.json_response(self.secret_bundle(request, entry.latest(), with_value=False))

    # ---- certificates ------------------------------------------------------------------
    # The subset the issuer and its tests use: import (PEM or PKCS#12 with the private
    # key), and get (latest or a version). Importing makes a key and a secret of the same
    # name and version, as Key Vault does; the certificate object answers with the
    # public certificate ("cer") only.

    async def certificates_entry(self, request: web.Request) -> web.StreamResponse:
        parts = _object_path(request)
        method = request.method
        if self.is_managed_hsm(request):
            op = "get_certificate" if method == "GET" and len(parts) in (1, 2) else "certs_api"
            return await self.managed_hsm_refuses(request, op)
        if not parts or not _valid_name(parts[0]):
            return self.bad(
                "The certificate name is invalid: use 1-127 letters, digits and dashes."
            )
        name, rest = parts[0], parts[1:]
        if rest == ["import"] and method == "POST":
            return await self.vault_call(
                request,
                "import_certificate",
                ("certificates", "import"),
                lambda who: self._import_certificate(request, name),
            )
        if len(rest) <= 1 and method == "GET":
            version = rest[0] if rest else ""
            return await self.vault_call(
                request,
                "get_certificate",
                ("certificates", "get"),
                lambda who: self._get_certificate(request, name, version),
            )
        return kv_error(404, "NotFound", f"The operation {method} {request.path} is not supported.")

    def certificate_bundle(self, request: web.Request, item: CertificateVersion) -> dict[str, Any]:
        base = self.vault_base(request)
        ident = f"{item.name}/{item.version}"
        bundle: dict[str, Any] = {
            "id": f"{base}/certificates/{ident}",
            "kid": f"{base}/keys/{ident}",
            "sid": f"{base}/secrets/{ident}",
            "x5t": crypto.b64url_encode(hashlib.sha1(item.cer).digest()),  # noqa: S324
            "cer": base64.b64encode(item.cer).decode(),
            "attributes": _attributes(item),
            "policy": {
                "id": f"{base}/certificates/{item.name}/policy",
                "key_props": {"exportable": True, "reuse_key": False},
                "secret_props": {"contentType": item.content_type},
                "x509_props": {"subject": item.subject},
                "issuer": {"name": "Unknown"},
                "attributes": {"enabled": True, "created": item.created, "updated": item.updated},
            },
        }
        if item.tags:
            bundle["tags"] = dict(item.tags)
        return bundle

    async def _get_certificate(
        self, request: web.Request, name: str, version: str
    ) -> web.StreamResponse:
        item = _find(self.certificates, "certificate", name, version)
        if isinstance(item, web.Response):
            return item
        return web.json_response(self.certificate_bundle(request, item))

    async def _import_certificate(self, request: web.Request, name: str) -> web.StreamResponse:
        if name in self.deleted_keys or name in self.deleted_secrets:
            return name_conflict("certificate", name)
        name = stored_name(self.certificates, name)
        try:
            data = await self.body(request)
            value = data.get("value")
            if not isinstance(value, str):
                return self.bad("The parameter 'value' is required and must be a string.")
            policy = data.get("policy") or {}
            content_type = str(
                (policy.get("secret_props") or {}).get("contentType") or PKCS12_CONTENT_TYPE
            )
            kty = (policy.get("key_props") or {}).get("kty")
            raw = base64.b64decode(value, validate=True)
            key, certs = _load_certificate_and_key(raw, content_type, data.get("pwd"))
            leaf = next(
                (c for c in certs if _same_public_key(c.public_key(), key.public_key())), None
            )
            if leaf is None:
                return self.bad("The certificate's public key does not match the private key.")
            material = crypto.KeyMaterial(
                str(kty) if kty else ("RSA" if isinstance(key, rsa.RSAPrivateKey) else "EC"), key
            )
            fields = _new_item_fields(data)
            version = new_version()
            secret_value = raw.decode() if content_type == PEM_CONTENT_TYPE else value
            der = leaf.public_bytes(serialization.Encoding.DER)
            cert_item = CertificateVersion(
                name=name,
                version=version,
                cer=der,
                content_type=content_type,
                subject=leaf.subject.rfc4514_string(),
                **fields,
            )
            key_item = KeyVersion(
                name=name,
                version=version,
                material=material,
                key_ops=["sign", "verify"],
                local=False,
                **fields,
            )
            secret_item = SecretVersion(
                name=name,
                version=version,
                value=secret_value,
                content_type=content_type,
                **fields,
            )
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            return self.bad(str(exc) or "Invalid certificate parameters.")
        self.keys.setdefault(name, {})[version] = key_item
        self.secrets.setdefault(name, {})[version] = secret_item
        self.certificates.setdefault(name, {})[version] = cert_item
        return web.json_response(self.certificate_bundle(request, cert_item))

    # ---- token endpoint ----------------------------------------------------------------

    async def openid_configuration(self, request: web.Request) -> web.StreamResponse:
        request["op"] = "discovery"
        self.counters.requests["discovery"] += 1
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.config.tenant_id.lower():
            return entra.entra_response(request, entra.unknown_tenant(tenant))
        base = self.vault_base(request)
        return web.json_response(
            {
                "issuer": f"{base}/{tenant}/v2.0",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": None,
                "cloud_instance_name": "akv-emulator",
            }
        )

    async def jwks(self, request: web.Request) -> web.StreamResponse:
        """The tenant's token signing keys, where the discovery document's jwks_uri points."""
        request["op"] = "discovery"
        self.counters.requests["discovery"] += 1
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.config.tenant_id.lower():
            return entra.entra_response(request, entra.unknown_tenant(tenant))
        return web.json_response(self.signing_keys.jwks())

    async def token(self, request: web.Request) -> web.StreamResponse:
        request["op"] = "token"
        self.counters.requests["token"] += 1
        faulted = await self.apply_faults(request, "token")
        if faulted is not None:
            return faulted
        form = await request.post()
        tenant = request.match_info["tenant"]
        if tenant.lower() != self.config.tenant_id.lower():
            return entra.entra_response(request, entra.unknown_tenant(tenant))
        grant = str(form.get("grant_type") or "")
        if grant != "client_credentials":
            return entra.entra_response(request, entra.unsupported_grant(grant))
        client_id = str(form.get("client_id") or "")
        identity = self.identities.get(client_id)
        if identity is None:
            return entra.entra_response(request, entra.unknown_client(client_id, tenant))
        scope_text = str(form.get("scope") or "")
        scopes = [s for s in scope_text.split() if s not in entra.OIDC_SCOPES]
        if not scopes:
            return entra.entra_response(request, entra.missing_scope())
        if len(scopes) != 1 or not scopes[0].endswith(entra.DEFAULT_SCOPE_SUFFIX):
            return entra.entra_response(request, entra.invalid_scope(scope_text))
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if isinstance(secret, str):
            if identity.secret is None or not hmac.compare_digest(
                secret.encode(), identity.secret.encode()
            ):
                return entra.entra_response(request, entra.bad_client_secret(client_id))
        elif isinstance(assertion, str):
            if form.get("client_assertion_type") != JWT_BEARER:
                return entra.entra_response(request, entra.bad_assertion_type())
            problem: entra.EntraRefusal | None = None
            if await self.discovered.refresh(assertion, self.trusted_issuers) is not None:
                problem = entra.oidc_endpoint_failed()
            if problem is None:
                problem = self.check_assertion(identity, assertion)
            if problem is not None:
                return entra.entra_response(request, problem)
        else:
            return entra.entra_response(request, entra.no_client_credential())
        # CAE clients send a claims parameter: their tokens, once revoked, are
        # answered with a claims challenge instead of a plain 401 (see entra).
        cae = entra.asks_for_cae(form.get("claims"))
        resource = scopes[0][: -len(entra.DEFAULT_SCOPE_SUFFIX)]
        # Which authority (host) and audience each token was asked of / for: the sovereign
        # cloud and Managed HSM tests check that the right ones were used.
        self.counters.requests[f"token@{request.host.lower()}"] += 1
        self.counters.requests[f"token_audience@{resource.rstrip('/')}"] += 1
        access_token = "akv-emu." + secrets.token_urlsafe(32)
        lifetime = self.config.token_lifetime
        self.tokens[access_token] = TokenRecord(
            client_id, self.config.tenant_id, resource, time.time() + lifetime, cae=cae
        )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }
        )

    def check_assertion(self, identity: Identity, assertion: str) -> entra.EntraRefusal | None:
        try:
            _, body, _ = assertion.split(".")
            unverified = json.loads(crypto.b64url_decode(body))
            issuer = str(unverified.get("iss", ""))
        except (ValueError, AttributeError):
            return entra.malformed_assertion()
        keys = self.trusted_issuers.get(issuer)
        if not keys:
            return entra.untrusted_issuer(issuer)
        try:
            claims = verify_jwt(assertion, keys)
        except AssertionRejected as exc:
            if "AADSTS50027" in str(exc):
                return entra.malformed_assertion()
            return entra.bad_assertion_signature()
        stamp = time.time()
        if float(claims.get("exp", 0)) <= stamp:
            return entra.assertion_out_of_time()
        if float(claims.get("nbf", 0)) > stamp + 300:
            return entra.assertion_out_of_time()
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        for cred in identity.federated:
            if (
                cred.issuer == issuer
                and cred.subject == claims.get("sub")
                and cred.audience in audiences
            ):
                return None
        return entra.federation_mismatch(
            issuer, str(claims.get("sub")), ",".join(map(str, audiences))
        )

    # ---- admin API ---------------------------------------------------------------------

    @staticmethod
    async def admin_body(request: web.Request) -> Any:
        if not request.can_read_body:
            return {}
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdminInputError("the request body is not valid JSON") from exc

    @staticmethod
    def admin_error(exc: Exception) -> web.Response:
        return web.json_response({"error": str(exc)}, status=400)

    async def admin_health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "vault_url": self.base_url})

    async def admin_counters(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.counters.describe())

    async def admin_reset_counters(self, request: web.Request) -> web.StreamResponse:
        self.counters.clear()
        return web.json_response(self.counters.describe())

    async def admin_get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.describe())

    async def admin_put_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self.faults = parse_faults(await self.admin_body(request))
        except AdminInputError as exc:
            return self.admin_error(exc)
        self.limiter.clear()
        return web.json_response(self.faults.describe())

    async def admin_patch_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            update = await self.admin_body(request)
            if not isinstance(update, dict):
                raise AdminInputError("the fault update must be a JSON object")
            merged = self.faults.describe()
            merged.update(update)
            self.faults = parse_faults(merged)
        except AdminInputError as exc:
            return self.admin_error(exc)
        return web.json_response(self.faults.describe())

    async def admin_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.faults = Faults()
        self.limiter.clear()
        return web.json_response(self.faults.describe())

    async def admin_identities(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([i.describe() for i in self.identities.values()])

    async def admin_put_identity(self, request: web.Request) -> web.StreamResponse:
        client_id = request.match_info["client_id"]
        try:
            data = await self.admin_body(request)
            if not isinstance(data, dict):
                raise AdminInputError("the identity must be a JSON object")
            unknown = sorted(set(data) - {"secret", "federated", "permissions", "role_assignments"})
            if unknown:
                raise AdminInputError(f"unknown identity field(s): {', '.join(unknown)}")
            identity = self.identities.get(client_id) or Identity(client_id)
            generated = None
            if "secret" in data:
                secret = data["secret"]
                if secret is True:
                    generated = secret = new_secret()
                if secret is not None and not isinstance(secret, str):
                    raise AdminInputError("secret must be a string, true (generate) or null")
                identity.secret = secret
            if "federated" in data:
                creds = data["federated"]
                if not isinstance(creds, list):
                    raise AdminInputError("federated must be a list")
                parsed = []
                for cred in creds:
                    if not isinstance(cred, dict) or not isinstance(cred.get("subject"), str):
                        raise AdminInputError("each federated credential needs a subject string")
                    assert self.issuer is not None
                    parsed.append(
                        FederatedCredential(
                            issuer=str(cred.get("issuer") or self.issuer.issuer),
                            subject=cred["subject"],
                            audience=str(cred.get("audience") or FEDERATION_AUDIENCE),
                        )
                    )
                identity.federated = parsed
            if "permissions" in data:
                perms = data["permissions"]
                if not isinstance(perms, dict) or set(perms) - {"keys", "secrets", "certificates"}:
                    raise AdminInputError(
                        "permissions must be an object with 'keys', 'secrets' and/or 'certificates'"
                    )
                for area, allowed in (
                    ("keys", KEY_PERMISSIONS),
                    ("secrets", SECRET_PERMISSIONS),
                    ("certificates", CERTIFICATE_PERMISSIONS),
                ):
                    if area not in perms:
                        continue
                    values = perms[area]
                    if not isinstance(values, list) or not set(values) <= allowed:
                        raise AdminInputError(
                            f"permissions.{area} must be a list drawn from "
                            f"{', '.join(sorted(allowed))}"
                        )
                    identity.permissions(area).clear()
                    identity.permissions(area).update(values)
            if "role_assignments" in data:
                try:
                    identity.role_assignments = rbac.parse_role_assignments(
                        data["role_assignments"]
                    )
                except rbac.RoleAssignmentError as exc:
                    raise AdminInputError(str(exc)) from None
        except AdminInputError as exc:
            return self.admin_error(exc)
        self.identities[client_id] = identity
        result = identity.describe()
        if generated is not None:
            result["secret"] = generated
        return web.json_response(result)

    async def admin_delete_identity(self, request: web.Request) -> web.StreamResponse:
        client_id = request.match_info["client_id"]
        if self.identities.pop(client_id, None) is None:
            return web.json_response({"error": f"no identity {client_id}"}, status=404)
        self.tokens = {k: v for k, v in self.tokens.items() if v.client_id != client_id}
        return web.json_response({"deleted": client_id})

    async def admin_assertion(self, request: web.Request) -> web.StreamResponse:
        assert self.issuer is not None
        client_id = request.match_info["client_id"]
        identity = self.identities.get(client_id)
        try:
            data = await self.admin_body(request)
            if not isinstance(data, dict):
                raise AdminInputError("the request must be a JSON object")
            subject = data.get("subject")
            if subject is None and identity is not None:
                own = [c for c in identity.federated if c.issuer == self.issuer.issuer]
                subject = own[0].subject if own else None
            if not isinstance(subject, str):
                raise AdminInputError(
                    f"identity {client_id} has no federated credential with the emulator's "
                    f"issuer; pass a subject"
                )
            lifetime = int(data.get("lifetime", 86400))
            audience = str(data.get("audience", FEDERATION_AUDIENCE))
        except (AdminInputError, TypeError, ValueError) as exc:
            return self.admin_error(exc)
        token = self.issuer.mint(subject, audience=audience, lifetime=lifetime)
        return web.json_response({"assertion": token, "issuer": self.issuer.issuer})

    async def admin_trusted_issuers(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"issuers": sorted(self.trusted_issuers)})

    async def admin_put_trusted_issuer(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self.admin_body(request)
            if not isinstance(data, dict) or not isinstance(data.get("issuer"), str):
                raise AdminInputError(
                    "expected {'issuer': str, 'public_keys_pem': [str, ...]} or "
                    "{'issuer': str, 'discovery_url'?: str, 'ca_pem'?: str}"
                )
            if "public_keys_pem" not in data:
                # Entra's way: read the keys from the issuer's discovery document.
                issuer, found = await self.discovered.trust(data)
                self.trusted_issuers[issuer] = found
                return web.json_response({"issuers": sorted(self.trusted_issuers)})
            pems = data.get("public_keys_pem")
            if not isinstance(pems, list) or not pems:
                raise AdminInputError("public_keys_pem must be a non-empty list of PEM strings")
            keys = [load_public_key(str(pem)) for pem in pems]
        except AdminInputError as exc:
            return self.admin_error(exc)
        self.trusted_issuers[data["issuer"]] = keys
        return web.json_response({"issuers": sorted(self.trusted_issuers)})

    async def admin_get_vault(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.vault_settings.describe())

    async def admin_put_vault(self, request: web.Request) -> web.StreamResponse:
        """Change the permission model, the firewall or the api-versions served."""
        try:
            data = await self.admin_body(request)
            self.vault_settings = rules.parse_settings(data, self.vault_settings)
        except (AdminInputError, rules.SettingsError) as exc:
            return self.admin_error(exc)
        return web.json_response(self.vault_settings.describe())

    async def admin_revoke_tokens(self, request: web.Request) -> web.StreamResponse:
        """Revoke every access token issued so far: a CAE token is answered with a
        claims challenge from now on, any other one with a plain 401 challenge."""
        now = time.time()
        revoked = len(self.tokens)
        self.tokens = {token: record for token, record in self.tokens.items() if record.cae}
        for record in self.tokens.values():
            record.revoked_at = record.revoked_at or now
        return web.json_response({"revoked": revoked})

    async def admin_reset(self, request: web.Request) -> web.StreamResponse:
        """Back to the start-up faults, empty counters and the default identities."""
        self.faults = parse_faults(self._initial_faults)
        self.connection_faults.configure({})
        self.connection_faults.down = {}
        self.limiter.clear()
        self.counters.clear()
        self.identities = self.default_identities()
        self.vault_settings = self.config.vault
        assert self.issuer is not None
        self.trusted_issuers = {self.issuer.issuer: [self.issuer.public_key]}
        self.discovered.clear()
        self.tokens = {k: v for k, v in self.tokens.items() if v.client_id in self.identities}
        return web.json_response({"reset": True})

    async def admin_clear_data(self, request: web.Request) -> web.StreamResponse:
        self.keys.clear()
        self.secrets.clear()
        self.deleted_keys.clear()
        self.deleted_secrets.clear()
        self.rotation_policies.clear()
        return web.json_response({"cleared": True})

    async def admin_rotate_key(self, request: web.Request) -> web.StreamResponse:
        """Rotate a key as Key Vault's rotation policy does when its trigger fires: no
        caller, no permission check, not a data-plane call (not counted, no faults)."""
        item = self.rotate(request.match_info["name"])
        if isinstance(item, web.Response):
            return web.json_response({"error": "no such key"}, status=404)
        return web.json_response(
            {"kid": f"{self.base_url}/keys/{item.name}/{item.version}", "version": item.version}
        )

    # ---- environment file --------------------------------------------------------------

    def env_lines(self, ca_file: Path, token_file: Path) -> dict[str, str]:
        values = {
            "AKV_VAULT_URL": self.base_url,
            "AKV_TLS_CA_FILE": str(ca_file),
            "AKV_EMULATOR_ADMIN_URL": f"{self.base_url}/_emulator",
            "AKV_EMULATOR_TENANT_ID": self.config.tenant_id,
            "AKV_EMULATOR_WORKLOAD_CLIENT_ID": WORKLOAD_CLIENT_ID,
            "AKV_EMULATOR_SP_CLIENT_ID": SECRET_CLIENT_ID,
            "AKV_EMULATOR_SP_CLIENT_SECRET": self.sp_secret,
            "AKV_EMULATOR_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": self.base_url,
            "AZURE_TENANT_ID": self.config.tenant_id,
        }
        if self.config.env_auth == "secret":
            values["AZURE_CLIENT_ID"] = SECRET_CLIENT_ID
            values["AZURE_CLIENT_SECRET"] = self.sp_secret
        else:
            values["AZURE_CLIENT_ID"] = WORKLOAD_CLIENT_ID
            values["AZURE_FEDERATED_TOKEN_FILE"] = str(token_file)
        return values


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=mode)
    tmp.write_text(text)
    tmp.replace(path)


async def _refresh_token_file(emulator: Emulator, token_file: Path, every: float) -> None:
    # Mirrors the kubelet's projected service account token rotation.
    while True:
        await asyncio.sleep(every)
        assert emulator.issuer is not None
        _write_atomic(token_file, emulator.issuer.mint(WORKLOAD_SUBJECT), 0o644)


async def serve(
    config: EmulatorConfig, ready: Callable[[dict[str, str]], None] | None = None
) -> None:
    """Run until emulator.shutdown is set; write state_dir/env once listening."""
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env_file = state_dir / "env"
    env_file.unlink(missing_ok=True)
    extra = [config.host] if config.host not in ("0.0.0.0", "::", "") else []  # noqa: S104
    tls = ensure_tls(state_dir, [*extra, *config.tls_names])
    emulator = Emulator(config)
    runner = web.AppRunner(emulator.app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=tls.server_context())
    await site.start()
    server = site._server  # the only way to learn the port chosen for port 0
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    public_host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host  # noqa: S104
    if ":" in public_host:
        public_host = f"[{public_host}]"
    emulator.bind(f"https://{public_host}:{port}")
    assert emulator.issuer is not None
    token_file = state_dir / "federated-token"
    _write_atomic(token_file, emulator.issuer.mint(WORKLOAD_SUBJECT), 0o644)
    refresher = asyncio.create_task(_refresh_token_file(emulator, token_file, 3600))
    values = emulator.env_lines(tls.ca_file, token_file)
    proxy: NameProxy | None = None
    if config.proxy:
        target = "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host  # noqa: S104
        proxy = NameProxy(config.tls_names, target, port)
        values["AKV_EMULATOR_PROXY_URL"] = await proxy.start()
        values["AKV_EMULATOR_PROXY_NAMES"] = ",".join(proxy.names)
    _write_atomic(env_file, "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    log.info("akv-emulator listening on %s (state in %s)", emulator.base_url, state_dir)
    if ready is not None:
        ready(values)
    _SERVING.append(emulator)
    try:
        await emulator.shutdown.wait()
    finally:
        _SERVING.remove(emulator)
        refresher.cancel()
        if proxy is not None:
            await proxy.stop()
        env_file.unlink(missing_ok=True)
        await runner.cleanup()
        log.info("akv-emulator stopped")


_SERVING: list[Emulator] = []


def request_shutdown() -> None:
    """Ask every emulator served by this process to stop (used by signal handlers)."""
    for emulator in _SERVING:
        emulator.shutdown.set()
